"""The local Function URL server, driving the real ``lambda_function.lambda_handler``.

A real HTTP server on a free loopback port, real HTTP clients, the real handler with a tiny
TFLite model; the only stand-in is a recording wrapper around the real handler for the
event-shape assertions. Pure mapping rules (handler result -> HTTP) are checked directly.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import re
import threading
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from localtools import localserver
from tests.conftest import running_local_server
from yogapose import web
from yogapose.metadata import load_metadata


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):  # conftest builds it once per session
    return tiny_model_path


@pytest.fixture(scope="module")
def real_handler(tiny_model):
    """The real handler, configured like the browser page needs it (loopback URLs allowed).

    The handler reads its settings from the environment per invocation, so the variables
    stay set while this module's server runs.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("MODEL_PATH", str(tiny_model))
    mp.setenv("ALLOW_PRIVATE_URLS", "true")
    try:
        yield localserver.load_handler()
    finally:
        mp.undo()


class Recorder:
    """Wraps the real handler and keeps what it was given (for event-shape assertions only)."""

    def __init__(self, handler):
        self.handler = handler
        self.calls: list[tuple[dict, object]] = []

    def __call__(self, event, context):
        self.calls.append((event, context))
        return self.handler(event, context)


@pytest.fixture(scope="module")
def recorder(real_handler):
    return Recorder(real_handler)


@pytest.fixture(scope="module")
def server(recorder):
    with running_local_server(recorder) as srv:
        yield srv


@pytest.fixture(scope="module")
def labels(tiny_model) -> tuple[str, ...]:
    return load_metadata(tiny_model).labels


def _jpeg(size=(640, 480), color=(200, 120, 40)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, color)
    img.paste((30, 60, 200), (size[0] // 4, size[1] // 4, size[0] // 2, size[1]))
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _assert_prediction(resp: requests.Response, labels) -> dict:
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    data = resp.json()
    assert set(data) == set(labels)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in data.values())
    assert sum(data.values()) == pytest.approx(1.0, abs=1e-4)
    return data


# --- the page ---------------------------------------------------------------------------


def test_page_is_served_with_its_security_headers(server):
    resp = requests.get(server.url + "/", timeout=30)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].lower().replace(" ", "") == "text/html;charset=utf-8"
    assert resp.headers["Content-Security-Policy"] == web.CONTENT_SECURITY_POLICY
    assert resp.text == web.index_html()
    assert len(resp.content) < 50 * 1024


def test_csp_hashes_are_those_of_the_inline_script_and_style():
    html = web.index_html()
    csp = dict(
        (d.split(" ", 1) + [""])[:2] for d in (p.strip() for p in web.CONTENT_SECURITY_POLICY.split(";"))
    )
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
        assert bodies, f"no inline <{tag}>"
        expected = {
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in bodies
        }
        assert set(csp[directive].split()) == expected
        assert "unsafe-inline" not in csp[directive]
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'"
    for directive in ("form-action", "base-uri", "frame-ancestors"):
        assert csp[directive] == "'none'"


def test_page_references_nothing_external():
    html = web.index_html()
    # No element loads anything from elsewhere (src/href/action/srcset/poster with a scheme
    # or protocol-relative URL); no CSS imports or url(); no external script or stylesheet.
    attrs = re.findall(
        r"""\b(?:src|href|action|formaction|srcset|poster)\s*=\s*["']?([^"'\s>]*)""", html, re.IGNORECASE
    )
    assert attrs  # the pattern does find attributes (the icon's data: URL at least)
    for value in attrs:
        assert not re.match(r"(?i)(https?:)?//", value), value
    assert "@import" not in html
    css = "".join(re.findall(r"<style>(.*?)</style>", html, re.DOTALL))
    assert css and not re.search(r"url\s*\(", css, re.IGNORECASE)
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.IGNORECASE)
    assert not re.search(r"<link[^>]*rel\s*=\s*[\"']?stylesheet", html, re.IGNORECASE)
    assert not re.search(r"(?i)cdn|googleapis|gstatic|unpkg|jsdelivr|cloudflare", html)
    # The page calls its own API with relative URLs only.
    assert re.findall(r"""fetch\(\s*["']([^"']+)["']""", html) == ["predict?details=1", "health"]


# --- predictions through HTTP -------------------------------------------------------------


def test_predict_raw_jpeg_bytes(server, labels):
    resp = requests.post(
        server.url + "/predict", data=_jpeg(), headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    _assert_prediction(resp, labels)
    assert resp.headers.get("X-Model-Version")


def test_predict_json_url_from_a_loopback_image_server(server, labels, httpserver):
    httpserver.expect_request("/pose.jpg").respond_with_data(_jpeg(), content_type="image/jpeg")
    resp = requests.post(
        server.url + "/predict", json={"url": httpserver.url_for("/pose.jpg")}, timeout=30
    )
    _assert_prediction(resp, labels)


def test_predict_json_base64_image(server, labels):
    body = {"image": base64.b64encode(_jpeg((300, 200))).decode()}
    _assert_prediction(requests.post(server.url + "/predict", json=body, timeout=30), labels)


def test_chunked_request_body_is_reassembled(server, labels):
    data = _jpeg()
    conn = http.client.HTTPConnection(urlsplit(server.url).hostname, urlsplit(server.url).port, timeout=30)
    try:
        conn.request(
            "POST",
            "/predict",
            body=iter([data[:1000], data[1000:5000], data[5000:]]),
            headers={"Content-Type": "image/jpeg"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        payload = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200, payload
    assert set(payload) == set(labels)


@pytest.mark.parametrize("lengths", [["+2"], ["1_0"], ["\u0661\u0660"], [" 12 ", "13"], ["-1"]])
def test_a_content_length_that_is_not_plain_digits_or_disagrees_is_400(server, lengths):
    """int() takes "+2", "1_0" and Unicode digits; a second, different header was ignored."""
    import socket

    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    head = "".join(f"Content-Length: {v}\r\n" for v in lengths)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + b'{"url": "x"}')
        reply = b""
        while chunk := sock.recv(65536):  # the server closes after a bad framing header
            reply += chunk
        reply = reply.decode("latin-1")
    assert reply.startswith("HTTP/1.1 400"), reply[:200]
    assert "invalid Content-Length header" in reply


def _raw_exchange(server, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (it does after these answers)."""
    import socket

    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


@pytest.mark.parametrize(
    ("request_head", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GARBAGE" * 9000 + b"\r\n\r\n", 400, "bad_request"),  # quoted back cut short
        (b"GET / HTTP/1.1x\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "bad_request"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "payload_too_large"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 120 + b"\r\n", 431, "payload_too_large"),
    ],
)
def test_requests_http_server_refuses_get_a_json_error_not_its_html_page(server, request_head,
                                                                         status, code):
    """A malformed request line, an over-long line, too many headers or an HTTP version the
    server does not speak were answered with http.server's HTML page (or, for a request line
    that did not parse, with that page and no status line at all)."""
    reply = _raw_exchange(server, request_head)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), reply[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"] and len(error["message"]) < 300


def test_an_http_0_9_request_is_refused_with_a_status_line(server):
    """'GET /' with no version is HTTP/0.9: http.server answered the page with no status
    line and no headers."""
    reply = _raw_exchange(server, b"GET /\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert b"HTTP/0.9" in reply.partition(b"\r\n\r\n")[2]


def test_the_access_log_has_no_query_string_and_no_raw_control_characters(real_handler, capfd):
    """`serve` logged GET /health?token=SECRET whole, and escape sequences in a path reached
    the terminal as they were."""
    srv = localserver.make_server("127.0.0.1", 0, real_handler, access_log=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        assert requests.get(srv.url + "/health?token=SECRET123", timeout=30).status_code == 200
        _raw_exchange(srv, b"GET /x\x1b[2Jy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)
    err = capfd.readouterr().err
    assert "GET /health -> 200" in err and "SECRET123" not in err
    assert "\x1b" not in err and "/x\\x1b[2Jy -> 404" in err


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("POST", "/predict", b"this is not an image", "image/jpeg", 415),
        ("POST", "/predict", b"{not json", "application/json", 400),
        ("POST", "/predict", b'{"nothing": 1}', "application/json", 400),
        ("GET", "/no-such-page", b"", None, 404),
    ],
)
def test_bad_requests_get_a_json_error_and_status(server, method, path, body, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    resp = requests.request(method, server.url + path, data=body, headers=headers, timeout=30)
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in resp.text


def test_a_non_image_url_target_is_a_json_error(server, httpserver):
    httpserver.expect_request("/notes.txt").respond_with_data("hello", content_type="text/plain")
    resp = requests.post(
        server.url + "/predict", json={"url": httpserver.url_for("/notes.txt")}, timeout=30
    )
    assert resp.status_code == 415, resp.text
    assert resp.json()["error"]["message"]


def test_body_over_lambdas_6mb_limit_is_413_without_invoking(server, recorder):
    before = len(recorder.calls)
    resp = requests.post(
        server.url + "/predict",
        data=b"\xff" * (localserver.MAX_PAYLOAD_BYTES + 1),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert len(recorder.calls) == before
    # Binary bodies count base64-encoded in the event, so 5 MB of bytes is also too much.
    resp = requests.post(
        server.url + "/predict",
        data=b"\xff" * (5 * 1024 * 1024),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert resp.status_code == 413
    assert len(recorder.calls) == before
    # The connection-level server is still healthy afterwards.
    assert requests.get(server.url + "/", timeout=30).status_code == 200


# --- the event the handler receives --------------------------------------------------------


def test_event_has_the_function_url_payload_v2_shape(server, recorder, labels):
    data = _jpeg()
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", "/predict?a=1&a=2&b=x%20y", skip_accept_encoding=True)
        conn.putheader("Content-Type", "image/jpeg")
        conn.putheader("Content-Length", str(len(data)))
        conn.putheader("User-Agent", "shape-test/1.0")
        conn.putheader("X-Dup", "one")
        conn.putheader("X-Dup", "two")
        conn.putheader("Cookie", "theme=dark; session=abc")
        conn.endheaders(data)
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        request_id = resp.getheader("x-amzn-RequestId")
    finally:
        conn.close()
    assert resp.status == 200, payload
    assert set(payload) == set(labels)

    event, context = recorder.calls[-1]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/predict"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["cookies"] == ["theme=dark", "session=abc"]
    headers = event["headers"]
    assert all(k == k.lower() for k in headers)
    assert "cookie" not in headers
    assert headers["x-dup"] == "one,two"
    assert headers["content-type"] == "image/jpeg"
    assert headers["user-agent"] == "shape-test/1.0"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == data

    ctx = event["requestContext"]
    assert ctx["accountId"] == "anonymous"
    assert ctx["routeKey"] == "$default" and ctx["stage"] == "$default"
    assert ctx["domainName"] == url.hostname
    assert ctx["domainPrefix"] and ctx["apiId"]
    assert ctx["http"] == {
        "method": "POST",
        "path": "/predict",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "shape-test/1.0",
    }
    assert str(uuid.UUID(ctx["requestId"])) == ctx["requestId"] == request_id
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", ctx["time"])
    assert isinstance(ctx["timeEpoch"], int) and ctx["timeEpoch"] > 1_600_000_000_000

    assert context.aws_request_id == request_id
    assert context.function_name and context.invoked_function_arn.startswith("arn:aws:lambda:")
    assert isinstance(context.memory_limit_in_mb, int)  # the name Powertools reads
    assert 0 < context.get_remaining_time_in_millis() <= 30_000


def test_json_bodies_arrive_as_text_and_get_requests_have_no_body(server, recorder):
    requests.post(server.url + "/predict", json={"nothing": 1}, timeout=30)
    event, _ = recorder.calls[-1]
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == {"nothing": 1}

    requests.get(server.url + "/", timeout=30)
    event, _ = recorder.calls[-1]
    assert event["requestContext"]["http"]["method"] == "GET"
    assert "body" not in event and event["isBase64Encoded"] is False
    assert "queryStringParameters" not in event and event["rawQueryString"] == ""


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("application/json; charset=utf-8", True),
        ("text/plain", True),
        ("application/xml", True),
        ("application/javascript", True),
        ("image/jpeg", False),
        ("application/octet-stream", False),
        ("application/x-www-form-urlencoded", False),
        (None, False),
    ],
)
def test_which_bodies_function_urls_base64_encode(content_type, text):
    event = localserver.build_event(
        "POST", "/", [("Content-Type", content_type)] if content_type else [], b"abc"
    )
    assert event["isBase64Encoded"] is (not text)
    assert event["body"] == ("abc" if text else base64.b64encode(b"abc").decode())


# --- handler result -> HTTP (Function URL rules) ---------------------------------------------


def test_structured_results_map_to_status_headers_cookies_and_body():
    r = localserver.to_http_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "text/plain", "X-One": "1"},
            "cookies": ["a=1; Max-Age=60", "b=2"],
            "body": base64.b64encode(b"\x00\x01binary").decode(),
            "isBase64Encoded": True,
        }
    )
    assert r.status == 201
    assert r.header("x-one") == "1" and r.header("content-type") == "text/plain"
    assert [v for k, v in r.headers if k == "Set-Cookie"] == ["a=1; Max-Age=60", "b=2"]
    assert r.body == b"\x00\x01binary"


@pytest.mark.parametrize(
    ("result", "body"),
    [
        ({"chair": 0.5, "tree": 0.5}, {"chair": 0.5, "tree": 0.5}),
        ("Hello, world!", "Hello, world!"),
        ([1, 2], [1, 2]),
        (None, None),
    ],
)
def test_plain_json_results_become_200_application_json(result, body):
    r = localserver.to_http_response(result)
    assert r.status == 200
    assert r.header("Content-Type") == "application/json"
    assert json.loads(r.body) == body


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "200", "body": "x"},
        {"statusCode": 99},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
        {"statusCode": 200, "headers": ["not", "a", "dict"]},
        {"statusCode": 200, "body": "x" * (localserver.MAX_PAYLOAD_BYTES + 1)},
        {"not-serialisable": object()},
    ],
)
def test_unusable_results_are_a_502_like_a_function_url(result):
    r = localserver.to_http_response(result)
    assert r.status == 502
    assert json.loads(r.body) == {"message": "Internal Server Error"}


def test_a_crashing_handler_is_a_502_and_the_server_keeps_serving(capfd):
    def broken(event, context):
        raise RuntimeError("boom")

    with running_local_server(broken) as srv:
        for _ in range(2):
            resp = requests.get(srv.url + "/", timeout=30)
            assert resp.status_code == 502
            assert "boom" not in resp.text and "Traceback" not in resp.text
    assert "RuntimeError: boom" in capfd.readouterr().err
