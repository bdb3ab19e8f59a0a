"""The route table: one home for method + path -> action, shared by the edge and the app."""

from __future__ import annotations

import pytest

from yogapose import edge
from yogapose.errors import NotFound


def request(method: str, path: str, accept: str = "") -> edge.HttpRequest:
    return edge.HttpRequest("function_url", method, path, {"accept": accept} if accept else {}, None, False)


@pytest.mark.parametrize(("method", "path"), list(edge.ROUTE_TABLE))
def test_every_table_entry_routes_to_its_action(method: str, path: str) -> None:
    assert edge.route(request(method, path)) is edge.ROUTE_TABLE[(method, path)]
    assert edge.route(request(method, path + "/")) is edge.ROUTE_TABLE[(method, path)]  # trailing slash
    if method == "GET":
        assert edge.route(request("HEAD", path)) is edge.ROUTE_TABLE[(method, path)]
    assert edge.route(request("OPTIONS", path)) is edge.Action.OPTIONS


def test_allowed_methods_are_derived_from_the_table() -> None:
    assert edge.ROUTES == {
        "/": ("GET", "HEAD", "POST", "OPTIONS"),
        "/predict": ("POST", "OPTIONS"),
        "/health": ("GET", "HEAD", "OPTIONS"),
    }


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/"), ("GET", "/predict"), ("HEAD", "/predict"),
                                              ("PUT", "/health")])
def test_other_methods_are_405_with_the_allowed_ones(method: str, path: str) -> None:
    with pytest.raises(edge.WrongMethod) as info:
        edge.route(request(method, path))
    assert info.value.http_status == 405 and info.value.allow == edge.ROUTES[path]


@pytest.mark.parametrize("path", ["/nope", "//predict", "/predict/x", "/health.json"])
def test_unknown_paths_are_404(path: str) -> None:
    with pytest.raises(NotFound):
        edge.route(request("POST", path))


def test_api_clients_asking_for_json_get_health_at_the_root() -> None:
    assert edge.route(request("GET", "/", "application/json")) is edge.Action.HEALTH
    assert edge.route(request("GET", "/", "text/html,application/json")) is edge.Action.PAGE


@pytest.mark.parametrize(("accept", "action"), [
    ("application/json;q=1, text/html;q=0", edge.Action.HEALTH),   # html refused outright
    ("text/html;q=0.5, application/json", edge.Action.HEALTH),
    ("application/json;q=0.5, text/html", edge.Action.PAGE),
    ("application/json;q=0", edge.Action.PAGE),                   # json refused
    ("application/json;q=nonsense", edge.Action.PAGE),
    ("*/*", edge.Action.PAGE),
    ("APPLICATION/JSON ; Q=0.9", edge.Action.HEALTH),
])
def test_the_root_weighs_the_accept_headers_q_values(accept: str, action: edge.Action) -> None:
    assert edge.route(request("GET", "/", accept)) is action


def test_the_app_answers_every_action(make_app) -> None:
    """A new Action without a responder is a mypy error; this is the runtime guard."""
    from yogapose.observability import RequestStats

    app = make_app()
    for action in edge.Action:
        if action is edge.Action.PREDICT:
            continue  # needs a body; the contract tests cover it
        resp = app.respond(action, request("GET", "/"), {}, RequestStats())
        assert resp["statusCode"] in (200, 204), action


def test_readme_route_table_is_the_route_table() -> None:
    """Every `METHOD /path` in the README's Function URL table is a table entry and back."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split("### Function URL (HTTPS)", 1)[1].split("\n\n", 2)[1]
    routes = {(m, p) for line in section.splitlines() if line.startswith("| `")
              for m, p in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[\w/]*)`", line.split("|")[1])}
    assert routes == set(edge.ROUTE_TABLE)
