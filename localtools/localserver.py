"""A local stand-in for a Lambda Function URL, so the page, curl and browsers work without AWS.

Each HTTP request becomes a Function URL event (API Gateway payload format 2.0) for
``lambda_function.lambda_handler``; the handler's return value becomes the HTTP response,
following the Function URL rules (structured ``statusCode``/``headers``/``body``/``cookies``
responses, or any other JSON value sent as ``200 application/json``).

This is different from the Runtime Interface Emulator (``python -m yogapose emulator``),
which exposes Lambda's raw invoke API: here callers speak plain HTTP to the function.

Like one Lambda execution environment, the server runs one invocation at a time; HTTP
parsing happens in per-connection threads, so a slow client does not hold up the others
until its request is complete.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from localtools.context import LambdaContext
from yogapose.deadline import FUNCTION_TIMEOUT_S
from yogapose.edge import ROUTE_TABLE
from yogapose.errors import BadRequest, PayloadTooLarge, PoseError, echo

Handler = Callable[[dict, Any], Any]

#: Lambda's synchronous invocation payload limit; it applies to the event (and response) JSON.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# Bodies up to this size are read and discarded before a 413 so the client sees the answer
# instead of a connection reset; anything bigger just gets the connection closed.
_DRAIN_LIMIT = 64 * 1024 * 1024
# Function URLs deliver only these as text; every other type (or none) arrives as base64.
_TEXT_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def is_text_content_type(content_type: str | None) -> bool:
    """True when a Function URL would pass the body as a plain string (not base64)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES


def _request_time(epoch: float) -> str:
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{time.strftime('%H:%M:%S', t)} +0000"


def _split_target(target: str) -> tuple[str, str]:
    """Request target -> (raw path, query string), the path taken verbatim.

    ``urlsplit`` would read ``//predict`` as a network location and route it to ``/``;
    a Function URL passes ``//predict`` on as the path (and the function answers 404).
    Absolute-form targets (``http://host/path``, as proxies send) keep only their path.
    """
    if target[:7].lower() == "http://" or target[:8].lower() == "https://":
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    path, _sep, query = target.partition("?")
    return path or "/", query


def build_event(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    source_ip: str = "127.0.0.1",
    protocol: str = "HTTP/1.1",
    request_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The Function URL (payload 2.0) event Lambda would build for this HTTP request."""
    now = time.time() if now is None else now
    request_id = request_id or str(uuid.uuid4())
    raw_path, query = _split_target(target)

    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":  # Function URLs move cookies out of the headers
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    merged.setdefault("x-forwarded-for", source_ip)
    merged.setdefault("x-forwarded-proto", "http")
    host = merged.get("host", "localhost")
    domain = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    merged.setdefault("x-amzn-trace-id", f"Root=1-{int(now):08x}-{uuid.uuid4().hex[:24]}")

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged
    if query:
        params: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            params[k] = f"{params[k]},{v}" if k in params else v
        event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": "anonymous",
        "apiId": "local",
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "http": {
            "method": method.upper(),
            "path": raw_path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _request_time(now),
        "timeEpoch": int(now * 1000),
    }
    if body:
        if is_text_content_type(merged.get("content-type")):
            try:
                event["body"] = body.decode("utf-8")
                event["isBase64Encoded"] = False
            except UnicodeDecodeError:  # mislabelled binary still reaches the function intact
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


class HttpResponse:
    """An HTTP response ready to write: status, header pairs (repeats allowed), body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def _json_response(status: int, payload: Any) -> HttpResponse:
    body = json.dumps(payload).encode("utf-8")
    return HttpResponse(status, [("Content-Type", "application/json")], body)


def _internal_error() -> HttpResponse:
    # What a Function URL answers when the function fails or returns something unusable.
    return _json_response(502, {"message": "Internal Server Error"})


def to_http_response(result: Any) -> HttpResponse:
    """Map a handler's return value to HTTP the way a Function URL does."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # "Lambda infers the response format": any other JSON value is a 200 JSON body.
        try:
            return _json_response(200, result)
        except (TypeError, ValueError):
            return _internal_error()
    status = result.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return _internal_error()
    headers: list[tuple[str, str]] = []
    raw_headers = result.get("headers") or {}
    if not isinstance(raw_headers, dict):
        return _internal_error()
    for name, value in raw_headers.items():
        headers.append((str(name), str(value)))
    for cookie in result.get("cookies") or []:
        headers.append(("Set-Cookie", str(cookie)))
    data = _response_body(result.get("body"), bool(result.get("isBase64Encoded")))
    if data is None or len(data) > MAX_PAYLOAD_BYTES:
        return _internal_error()
    return HttpResponse(status, headers, data)


def _response_body(body: Any, is_base64: bool) -> bytes | None:
    """A structured response's body as bytes; None when a Function URL could not send it."""
    if body is None:
        return b""
    if isinstance(body, str):
        if not is_base64:
            return body.encode("utf-8")
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            return None
    try:  # a non-string body is serialised, as Lambda does
        return json.dumps(body).encode("utf-8")
    except (TypeError, ValueError):
        return None


class FunctionUrlServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` that invokes a Lambda handler per request."""

    daemon_threads = True
    request_queue_size = 64  # a page's burst of connections is queued, not reset

    def __init__(
        self,
        address: tuple[str, int],
        handler: Handler,
        *,
        timeout_s: float = FUNCTION_TIMEOUT_S,
        access_log: bool = False,
    ) -> None:
        self.lambda_handler = handler
        self.timeout_s = timeout_s
        self.access_log = access_log
        self._invoke_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    @property
    def url(self) -> str:
        address, port = self.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def invoke(self, event: dict, request_id: str) -> HttpResponse:
        """Run the handler once (serialised, like one execution environment)."""
        with self._invoke_lock:
            context = LambdaContext(request_id, timeout_s=self.timeout_s)
            try:
                result = self.lambda_handler(event, context)
            except Exception:  # noqa: BLE001 - a crash is logged and answered 502, like Lambda
                traceback.print_exc(file=sys.stderr)
                return _internal_error()
        return to_http_response(result)


class _RequestHandler(BaseHTTPRequestHandler):
    server: FunctionUrlServer
    protocol_version = "HTTP/1.1"
    server_version = "yogapose-local"
    # A client silent this long (idle keep-alive, a half-sent request) gives its thread back.
    timeout = 60

    def version_string(self) -> str:
        return self.server_version

    def _handle(self) -> None:
        if self.request_version == "HTTP/0.9":  # no headers either way: refuse it in HTTP/1.1
            self.send_error(400, "HTTP/0.9 requests are not supported")
            return
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
            event = build_event(
                self.command,
                self._raw_target(),
                list(self.headers.items()),
                body,
                source_ip=self.client_address[0],
                protocol=self.request_version,
                request_id=request_id,
            )
            if len(json.dumps(event)) > MAX_PAYLOAD_BYTES:
                raise PayloadTooLarge(
                    f"request must be smaller than {MAX_PAYLOAD_BYTES} bytes as a Lambda event "
                    "(binary bodies count base64-encoded)"
                )
            response = self.server.invoke(event, request_id)
        except PoseError as exc:
            response = _json_response(exc.http_status, {"error": exc.to_dict()})
        self._send(response, request_id)
        if self.server.access_log:
            ms = (time.monotonic() - started) * 1000
            # The path only (a query string may hold a token), control characters escaped
            # (they would reach the terminal), cut short.
            path = echo(urlsplit(self.path).path.encode("unicode_escape").decode("ascii"), 200)
            sys.stderr.write(
                f"{self.client_address[0]} {echo(self.command, 20)} {path} -> {response.status} "
                f"({ms:.0f} ms)\n"
            )

    def _raw_target(self) -> str:
        """The request target as sent: http.server collapses a leading ``//`` in ``self.path``
        (its own open-redirect guard), but a Function URL passes it on unchanged."""
        words = self.requestline.split()
        return words[1] if len(words) == 3 else self.path

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return b""
        try:
            # Digits only, and one value (RFC 9110 8.6): int() would also take "+2", "1_0"
            # or Unicode digits, and a second, different header would be ignored.
            if len(set(values)) != 1 or not re.fullmatch(r"[0-9]{1,18}", values[0].strip()):
                raise ValueError
            length = int(values[0])
        except ValueError:
            self.close_connection = True
            raise BadRequest("invalid Content-Length header") from None
        if length > MAX_PAYLOAD_BYTES:
            self._discard(length)
            raise PayloadTooLarge(f"request body of {length} bytes is over Lambda's 6 MB limit")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        """A chunked body, strictly: every size is 1-16 hex digits (``int(x, 16)`` would also
        take ``-1``, ``+5``, ``0x10`` and ``1_0``; ``-1`` then read to EOF past the cap), each
        chunk is complete and followed by CRLF. Anything else is a 400."""
        parts: list[bytes] = []
        total = 0
        while True:
            size = self._chunk_size(self.rfile.readline(1024))
            if size == 0:
                for _ in range(100):  # trailer fields, then the empty line
                    if self.rfile.readline(1024) in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
                raise self._malformed("too many trailer fields")
            total += size
            if total > MAX_PAYLOAD_BYTES:
                self.close_connection = True
                raise PayloadTooLarge("request body is over Lambda's 6 MB limit")
            data = self.rfile.read(size)
            if len(data) < size:
                raise self._malformed("a chunk ended early")
            parts.append(data)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise self._malformed("a chunk is not followed by CRLF")

    def _chunk_size(self, line: bytes) -> int:
        if not line.endswith(b"\n"):
            raise self._malformed("a chunk-size line is missing or too long")
        size = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size):
            raise self._malformed(f"invalid chunk size {size[:20]!r}")
        return int(size, 16)

    def _malformed(self, why: str) -> BadRequest:
        self.close_connection = True  # the framing is lost: nothing after this can be trusted
        return BadRequest(f"malformed chunked request body: {why}")

    def _discard(self, length: int) -> None:
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _send(self, response: HttpResponse, request_id: str) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() in {"content-length", "connection", "transfer-encoding"}:
                continue  # framing is this server's job
            self.send_header(name, value)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, a line or header block over
        its limits, an HTTP version it does not speak) as the JSON error every other answer
        is, instead of its HTML page. The request never reached the function."""
        error = PayloadTooLarge if code in (413, 414, 431) else BadRequest
        text = echo(message or HTTPStatus(code).phrase, 200)  # its message quotes the request line
        body = json.dumps({"error": {"code": error.code, "message": text}}).encode("utf-8")
        self.close_connection = True  # the request's framing is unknown
        # A request line that did not parse leaves http.server at HTTP/0.9, which sends no
        # status line or headers; answer in HTTP/1.1 so clients see the status.
        self.request_version = self.protocol_version
        self.send_response(code, HTTPStatus(code).phrase)  # the client's text only in the body
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # _handle writes one access line itself (only when access_log is on)

    def __getattr__(self, name: str) -> Any:
        # http.server answers methods without a do_<METHOD> with its own 501 text/html page;
        # a Function URL passes every method to the function, which answers 405 JSON.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


def load_handler() -> Handler:
    """Import ``lambda_function.lambda_handler`` (loads the model, as a cold start does)."""
    try:
        import lambda_function
    except ModuleNotFoundError as exc:
        if exc.name != "lambda_function":
            raise
        # Started from elsewhere than the repository root: lambda_function.py sits beside
        # the yogapose package (as in /var/task), in the repository root above localtools/.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import lambda_function
    return lambda_function.lambda_handler


def make_server(
    host: str = "127.0.0.1",
    port: int = 3000,
    handler: Handler | None = None,
    *,
    timeout_s: float = FUNCTION_TIMEOUT_S,
    access_log: bool = False,
) -> FunctionUrlServer:
    """A bound (not yet serving) server; ``port=0`` picks a free port (see ``server.url``).

    ``handler`` defaults to the real ``lambda_function.lambda_handler``.
    """
    return FunctionUrlServer(
        (host, port), handler or load_handler(), timeout_s=timeout_s, access_log=access_log
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Serve the function on ``http://host:port/`` until Ctrl+C."""
    handler = load_handler()
    try:
        server = make_server(host, port, handler, access_log=True)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not _is_loopback(host):
        print(f"warning: listening on {host}: other machines can reach this server", file=sys.stderr)
    print(f"Serving lambda_function.lambda_handler as a Function URL at {server.url}/", file=sys.stderr)
    for (method, path), action in ROUTE_TABLE.items():  # the function's own routes
        print(f"  {method:4s} {server.url}{path}  ({action})", file=sys.stderr)
    print("  Ctrl+C stops", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
