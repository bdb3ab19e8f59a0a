"""The edge: which kind of event arrived, what an HTTP request asks for, and the responses.

Event kinds:

* **direct**: any other JSON object, e.g. ``{"url": ...}`` from ipython, ``boto3 invoke``
  or the emulator on ``:8080``. Answered with plain JSON; errors are raised.
* **map_batch** (``{"Items": [...], "BatchInput": {...}}``, a Step Functions Distributed
  Map child) and **s3_event** (an S3 notification, ``Records[].eventSource == "aws:s3"``):
  bulk classification, answered by ``yogapose.batch``.
* **HTTP payload 2.0** (``"version": "2.0"``): Lambda Function URLs and API Gateway HTTP
  APIs. **HTTP payload 1.0** (``httpMethod``): API Gateway REST APIs and HTTP APIs
  configured for 1.0. Answered with ``{"statusCode", "headers", "body", ...}``; errors become
  JSON bodies ``{"error": {"code", "message"}}`` with the matching status.

Routes (see the README's table): ``GET /`` page (or the health JSON when the client's Accept
header weighs ``application/json`` above ``text/html``), ``POST /`` and ``POST /predict``
prediction, ``GET /health``. ``HEAD`` is accepted wherever ``GET`` is; ``OPTIONS`` on any
of these routes answers 204 with ``Allow`` (CORS
preflights are answered by the Function URL itself when CORS is configured on it).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import b64, formats
from .errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PoseError,
    UnsupportedImage,
    echo,
)

# Media types sent as raw image bytes in the body (the decoder sniffs the real format).
IMAGE_MEDIA_TYPES = formats.MEDIA_TYPES | {"application/octet-stream"}
# Bodies that may be either JSON or raw bytes (curl -d / --data-binary sends form-urlencoded).
_SNIFFED_MEDIA_TYPES = frozenset({"", "text/plain", "application/x-www-form-urlencoded"})
# Room for the JSON around one base64 image in a request body.
JSON_BODY_SLACK = 64 * 1024


class Action(StrEnum):
    """What a routed HTTP request asks for; ``App`` has one responder per action."""

    PAGE = "page"
    HEALTH = "health"
    PREDICT = "predict"
    OPTIONS = "options"


#: The route table, the one home of the HTTP surface (README's table, the local server's
#: banner and the app's dispatch follow it). ``HEAD`` is answered wherever ``GET`` is, and
#: ``OPTIONS`` on every listed path (elsewhere 404), so neither is listed.
ROUTE_TABLE: dict[tuple[str, str], Action] = {
    ("GET", "/"): Action.PAGE,
    ("POST", "/"): Action.PREDICT,
    ("POST", "/predict"): Action.PREDICT,
    ("GET", "/health"): Action.HEALTH,
}
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_by_path(table: Mapping[tuple[str, str], Action]) -> dict[str, tuple[str, ...]]:
    """``{path: methods}`` for the ``Allow`` header, HEAD and OPTIONS included."""
    methods: dict[str, set[str]] = {}
    for method, path in table:
        methods.setdefault(path, {"OPTIONS"}).update({method, "HEAD"} if method == "GET" else {method})
    return {path: tuple(sorted(m, key=_METHOD_ORDER.index)) for path, m in methods.items()}


#: ``{path: allowed methods}``, derived from :data:`ROUTE_TABLE`.
ROUTES: dict[str, tuple[str, ...]] = _allowed_by_path(ROUTE_TABLE)

JSON_TYPE = "application/json"


class WrongMethod(MethodNotAllowed):
    """405 that knows which methods the route does allow (for the ``Allow`` header)."""

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


@dataclass(frozen=True)
class HttpRequest:
    kind: str  # "function_url" | "apigw_v2" | "apigw_v1"
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: str | None
    is_base64: bool
    request_id: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)  # queryStringParameters

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def media_type(self) -> str:
        return self.header("content-type").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Body:
    """A parsed request body: either a JSON value or raw image bytes."""

    json: Any = None
    image: bytes | None = None


# ------------------------------------------------------------------------------ detection


#: Event kinds that arrive over HTTP (a Function URL or API Gateway), as opposed to a
#: direct invoke or a bulk event, which need the caller's IAM permission to invoke.
HTTP_KINDS = frozenset({"function_url", "apigw_v2", "apigw_v1"})


def event_kind(event: Any) -> str:
    """``"direct"``, ``"function_url"``, ``"apigw_v2"``, ``"apigw_v1"``, ``"map_batch"`` or ``"s3_event"``.

    Anything that is not a JSON object is a malformed direct invoke (BadRequest).
    """
    if not isinstance(event, dict):
        raise BadRequest(
            f"event must be a JSON object such as {{\"url\": \"https://...\"}}, got {type_name(event)}"
        )
    ctx = event.get("requestContext")
    if event.get("version") == "2.0" and isinstance(ctx, dict) and ("rawPath" in event or "http" in ctx):
        domain = str(ctx.get("domainName") or "")
        return "function_url" if ".lambda-url." in domain else "apigw_v2"
    if "httpMethod" in event and "requestContext" in event:
        return "apigw_v1"
    if "Items" in event and set(event) <= {"Items", "BatchInput"}:
        return "map_batch"
    records = event.get("Records")
    if isinstance(records, list) and records and all(
        isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records
    ):
        return "s3_event"
    return "direct"


def parse_http(event: dict, kind: str) -> HttpRequest:
    """Normalise a payload 1.0/2.0 event; malformed fields raise BadRequest."""
    ctx = event.get("requestContext")
    if not isinstance(ctx, dict):
        raise BadRequest("requestContext must be an object")
    if kind == "apigw_v1":
        method = event.get("httpMethod")
        path = event.get("path")
        request_id = ctx.get("requestId")
    else:
        http = ctx.get("http")
        if not isinstance(http, dict):
            raise BadRequest("requestContext.http must be an object")
        method = http.get("method")
        path = event.get("rawPath", http.get("path"))
        request_id = ctx.get("requestId")
        stage = ctx.get("stage")
        # API Gateway HTTP APIs put a named stage in front of the path; strip it.
        if isinstance(stage, str) and stage not in ("", "$default") and isinstance(path, str):
            prefix = "/" + stage
            if path == prefix or path.startswith(prefix + "/"):
                path = path[len(prefix):] or "/"
    if not isinstance(method, str) or not method:
        raise BadRequest("the HTTP method is missing from the event")
    if not isinstance(path, str):
        raise BadRequest("the HTTP path is missing from the event")
    headers = _headers(event.get("headers"))
    body = event.get("body")
    if body is not None and not isinstance(body, str):
        raise BadRequest(f"body must be a string, got {type_name(body)}")
    is_b64 = event.get("isBase64Encoded", False)
    if not isinstance(is_b64, bool):
        raise BadRequest("isBase64Encoded must be true or false")
    return HttpRequest(kind, method.upper(), path or "/", headers, body, is_b64,
                       request_id if isinstance(request_id, str) else None,
                       _query(event.get("queryStringParameters")))


def _query(raw: Any) -> dict[str, str]:
    """Query parameters (Lambda has already split and URL-decoded them)."""
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def wants_details(req: HttpRequest) -> bool:
    """``?details=1`` asks for the detailed answer (verdict, confidence, person box)."""
    value = req.query.get("details")
    if value is None:
        return False
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise BadRequest(f"query parameter 'details' must be 1/true or 0/false, got {echo(value)!r}")


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest(f"headers must be an object, got {type_name(raw)}")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(name, str) and isinstance(value, str):
            out[name.lower()] = value
    return out


# ------------------------------------------------------------------------------ routing


def _route_path(req: HttpRequest) -> str:
    return req.path if req.path == "/" else req.path.rstrip("/") or "/"


def route(req: HttpRequest) -> Action:
    """The :class:`Action` :data:`ROUTE_TABLE` gives the request; NotFound / WrongMethod."""
    path = _route_path(req)
    allowed = ROUTES.get(path)
    if allowed is None:
        raise NotFound(f"no route {echo(path)!r}; try POST /predict, GET /health or GET /")
    if req.method == "OPTIONS":
        return Action.OPTIONS
    method = "GET" if req.method == "HEAD" else req.method
    action = ROUTE_TABLE.get((method, path))
    if action is None:
        raise WrongMethod(f"{echo(req.method)} is not allowed on {path}; use {', '.join(allowed)}", allowed)
    if action is Action.PAGE and wants_json(req):
        return Action.HEALTH
    return action


def varies_by_accept(req: HttpRequest) -> bool:
    """``GET /`` answers the page or the health JSON by the Accept header: its responses
    say ``Vary: Accept`` so a cache in front never hands one to a client that asked for the
    other."""
    return _route_path(req) == "/" and req.method in ("GET", "HEAD")


def allowed_methods(req: HttpRequest) -> tuple[str, ...]:
    return ROUTES.get(_route_path(req), ())


def wants_json(req: HttpRequest) -> bool:
    """``GET /`` from an API client -> health JSON: the Accept header names
    ``application/json`` with a higher q-value than ``text/html`` (absent counts as 0;
    wildcards are ignored, browsers name text/html)."""
    weights = {"application/json": 0.0, "text/html": 0.0}
    for part in req.header("accept").lower().split(",")[:64]:
        media, *params = (p.strip() for p in part.split(";"))
        if media in weights:
            weights[media] = max(weights[media], _q_value(params))
    return weights["application/json"] > weights["text/html"]


def _q_value(params: list[str]) -> float:
    """The ``q=`` parameter of one Accept entry (RFC 9110 12.4.2); 1 when absent, 0 when malformed."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                q = float(value.strip()[:8])
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


# ------------------------------------------------------------------------------ bodies


def json_body_limit(max_bytes: int) -> int:
    """Largest JSON body: one base64 image of ``max_bytes`` plus some JSON around it."""
    return -(-max_bytes * 4 // 3) + JSON_BODY_SLACK


def read_body(req: HttpRequest, max_bytes: int) -> Body:
    """The request body as JSON or image bytes, under the size limits.

    Raw image bodies may be ``max_bytes``; JSON bodies :func:`json_body_limit`. The size is
    checked on the transported string before any base64 decoding happens.
    """
    media = req.media_type
    raw = req.body or ""
    if media in IMAGE_MEDIA_TYPES:
        data = _decode_transport(raw, req.is_base64, max_bytes, "image body")
        if not data:
            raise BadRequest(f"request body is empty: Content-Type {media} but no image bytes were sent")
        return Body(image=data)
    if media.startswith("image/"):
        raise UnsupportedImage(
            f"Content-Type {echo(media)} is not supported; send {formats.NAMES}"
        )
    is_json = media == JSON_TYPE or media.endswith("+json")
    if not is_json and media not in _SNIFFED_MEDIA_TYPES:
        raise UnsupportedImage(
            f"Content-Type {echo(media)} is not supported; send JSON ({{\"url\": ...}} or "
            "{\"image\": <base64>}) or the image bytes with an image/* Content-Type"
        )
    limit = json_body_limit(max_bytes) if is_json else max(json_body_limit(max_bytes), max_bytes)
    data = _decode_transport(raw, req.is_base64, limit, "request body")
    if not data.strip():
        raise BadRequest(
            'request body is empty; send JSON such as {"url": "https://..."} or the image bytes'
        )
    if not is_json and not _looks_like_json(data):
        # curl -d url=https://... or an HTML form; a GIF's header can read "GIF89a=..."
        if formats.sniff(data) is None and _looks_like_form_fields(data):
            raise BadRequest('form fields are not accepted; send JSON such as {"url": "https://..."} '
                             "with Content-Type: application/json, or the image bytes")
        # curl --data-binary @photo.jpg without -H: raw bytes after all.
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"image body is {len(data)} bytes, over the limit of {max_bytes}")
        return Body(image=data)
    return Body(json=parse_json(data))


def _looks_like_form_fields(data: bytes) -> bool:
    """Form-encoded fields holding one of ours (``url=...``, ``a=1&URL=...``, jQuery's
    ``urls%5B%5D=...``): the body starts as ``name=`` and names a field of the API."""
    return (re.match(rb"[A-Za-z_][\w.\-\[\]%]*=", data[:64]) is not None
            and re.search(rb"(?:^|[&;])(?:url|urls|image|images)(?:\[\]|%5B%5D)?=", data[:4096],
                          re.IGNORECASE) is not None)


def _looks_like_json(data: bytes) -> bool:
    # A UTF-8 byte-order mark first: a request file saved by Windows Notepad (json.loads
    # of the bytes skips it too).
    return data.removeprefix(codecs.BOM_UTF8).lstrip()[:1] in (b"{", b"[", b'"')


def _decode_transport(raw: str, is_base64: bool, limit: int, what: str) -> bytes:
    if is_base64:
        return b64.decode_transport(raw, limit, what)
    if len(raw) > limit:  # characters >= bytes/4 for UTF-8; cheap pre-check
        raise PayloadTooLarge(f"{what} is over the limit of {limit} bytes")
    data = raw.encode("utf-8", "surrogatepass")
    if len(data) > limit:
        raise PayloadTooLarge(f"{what} is {len(data)} bytes, over the limit of {limit}")
    return data


def parse_json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"request body is not valid JSON: {_short(exc)}") from None
    except RecursionError:
        raise BadRequest("request body is not valid JSON: nested too deeply") from None


# ------------------------------------------------------------------------------ responses


def response(status: int, body: str, content_type: str, headers: Mapping[str, str] | None = None) -> dict:
    out_headers = {"Content-Type": content_type, "X-Content-Type-Options": "nosniff"}
    if headers:
        out_headers.update(headers)
    return {"statusCode": status, "headers": out_headers, "body": body, "isBase64Encoded": False}


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> dict:
    merged = {"Cache-Control": "no-store"}
    merged.update(headers or {})
    return response(status, json.dumps(payload, separators=(",", ":")), JSON_TYPE, merged)


def error_response(exc: PoseError, headers: Mapping[str, str] | None = None) -> dict:
    merged = dict(headers or {})
    if isinstance(exc, WrongMethod):
        merged["Allow"] = ", ".join(exc.allow)
    return json_response(exc.http_status, {"error": exc.to_dict()}, merged)


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> dict:
    out = {"statusCode": status, "headers": dict(headers or {}), "body": "", "isBase64Encoded": False}
    return out


def head_only(resp: dict) -> dict:
    """The same response without a body (HEAD)."""
    return {**resp, "body": ""}


def type_name(value: Any) -> str:
    """JSON name of a value's type for error messages (``object``, ``array``, ``null``...)."""
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]
