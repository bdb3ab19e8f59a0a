"""Guarded fetching of untrusted image sources: ``http(s)://`` URLs and ``s3://`` URIs.

What a caller-supplied URL is allowed to do, and why:

* Schemes: http, https, s3. Anything else (file, ftp, gopher, data, javascript, ...) is
  refused with TargetNotAllowed (403); credentials in the URL too (403).
* Addresses: the host is resolved once and every address vetted by ``yogapose.netguard``;
  the socket then connects to a vetted address while the Host header, TLS SNI and
  certificate check use the host name, so DNS rebinding has no window.
* Redirects: at most ``limits.max_redirects``, each hop re-parsed and re-vetted.
* Time: connect and per-read timeouts plus one total deadline covering DNS, connects,
  redirects, headers and a slow-drip body (enforced on every socket read): the fetch's own
  ``fetch_deadline`` or the request's :class:`~yogapose.deadline.Deadline`, whichever is
  sooner.
* Size: ``limits.max_bytes`` is enforced from Content-Length and again while streaming.
* No decompression: ``Accept-Encoding: identity`` is sent and an encoded body refused.
* Proxy environment variables are ignored on purpose: a proxy would connect to a host we
  did not vet.

Only stdlib (``http.client``, ``socket``, ``ssl``) is imported here; boto3 is imported on
first use of an ``s3://`` URI so HTTP-only cold starts stay fast.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urljoin, urlsplit

from . import formats, netguard, s3client
from .config import Settings
from .deadline import Deadline, DeadlineExceeded
from .errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    PoseError,
    TargetNotAllowed,
    UnsupportedImage,
    UpstreamError,
    UpstreamTimeout,
)

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https", "s3")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ACCEPT = formats.ACCEPT
_CHUNK = 64 * 1024
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
#: S3's longest object key, in UTF-8 bytes.
MAX_S3_KEY_BYTES = 1024
# S3 bucket names as botocore accepts them (legacy names may contain upper case/underscores).
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]$")


@dataclass(frozen=True)
class FetchLimits:
    """What one fetch may cost (defaults: :class:`~yogapose.config.Settings`'s).

    ``deadline`` is the request's: the fetch ends at it or after ``fetch_deadline``,
    whichever comes first. ``allow_s3`` False refuses ``s3://`` URIs (a public demo's URL:
    anyone could have the function read its buckets).
    """

    connect_timeout: float = Settings.connect_timeout
    read_timeout: float = Settings.read_timeout
    fetch_deadline: float = Settings.fetch_deadline
    max_bytes: int = Settings.max_bytes
    max_redirects: int = Settings.max_redirects
    allow_private: bool = Settings.allow_private
    user_agent: str = Settings.user_agent
    deadline: Deadline | None = None
    allow_s3: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, deadline: Deadline | None = None,
                      over_http: bool = False) -> FetchLimits:
        """``over_http``: the request came through the Function URL (or API Gateway), where
        ``S3_URLS_OVER_HTTP`` decides; direct invokes and bulk events need IAM and keep s3://."""
        return cls(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            fetch_deadline=settings.fetch_deadline,
            max_bytes=settings.max_bytes,
            max_redirects=settings.max_redirects,
            allow_private=settings.allow_private,
            user_agent=settings.user_agent,
            deadline=deadline,
            allow_s3=settings.s3_urls_over_http or not over_http,
        )


class _DeadlinePassed(TimeoutError):
    """The fetch's total deadline passed (raised from our socket wrappers, so that
    http.client and ssl hand it back to us unchanged)."""


@dataclass(frozen=True)
class _Clock:
    """When this fetch must end, and whether that is the request's deadline."""

    expires: float
    request_bound: bool

    @classmethod
    def start(cls, limits: FetchLimits) -> _Clock:
        own = time.monotonic() + limits.fetch_deadline
        request = limits.deadline.expires if limits.deadline is not None else float("inf")
        return cls(min(own, request), request <= own)

    def timeout(self, what: str) -> UpstreamTimeout:
        if self.request_bound:
            return DeadlineExceeded(f"the request ran out of time while {what}")
        return UpstreamTimeout(f"{what} did not finish within the fetch deadline")


@dataclass(frozen=True)
class Fetched:
    """Bytes fetched from a source; ``final_url`` is redacted (safe to log)."""

    data: bytes = field(repr=False)  # never end up in a log line via repr()
    content_type: str | None
    source_kind: Literal["http", "s3"]
    final_url: str
    bytes_read: int
    redirects: int = 0


def redact_url(url: object) -> str:
    """``scheme://host[:port]/path`` for logs: no userinfo, query string or fragment."""
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    # Lone surrogates ("\ud800" is valid JSON) cannot be written as UTF-8 by the log handler.
    text = url.strip()[:MAX_URL_LENGTH].encode("utf-8", "backslashreplace").decode("utf-8")
    if text[:5].lower() == "s3://":
        # The key is verbatim ('?' and '#' are part of it). A bucket name never holds '@':
        # what comes before one is someone's credentials.
        bucket, slash, key = text[5:].partition("/")
        if ":" in bucket and "@" not in bucket:  # "KEY:secret/with/slashes@bucket/key"
            return "s3://<withheld: looks like credentials>"
        return f"s3://{bucket.rpartition('@')[2]}{slash}{key}"
    try:
        parts = urlsplit(text)
        netloc = parts.netloc.rpartition("@")[2]
        parts.port  # noqa: B018 - raises for "user:pass" cut short by a '/', '?' or '#' in it
    except ValueError:
        return "<malformed url>"
    if not parts.scheme or not netloc:
        return "<malformed url>"
    after_scheme = text.split("://", 1)[-1]
    if "@" not in parts.netloc and ":" in after_scheme.partition("@")[0] and "@" in after_scheme:
        # "user:pass@host" whose password holds a '/', '?' or '#' (https://alice:99/x@host):
        # urlsplit ends the authority early, and any part of the rest may be the password.
        return f"{parts.scheme.lower()}://<withheld: looks like user:password@host>"
    return f"{parts.scheme.lower()}://{netloc.lower()}{parts.path}"


def fetch(source: str, limits: FetchLimits | Settings) -> Fetched:
    """Fetch the bytes ``source`` points at, under every limit in ``limits``.

    Raises only :class:`yogapose.errors.PoseError` subclasses (see the module docstring
    and the README's error table for which condition maps to which status). A ``Settings``
    is accepted as its limits without a request deadline.
    """
    if not isinstance(limits, FetchLimits):
        limits = FetchLimits.from_settings(limits)
    if not isinstance(source, str):
        raise BadRequest(f"url must be a string, got {type(source).__name__}")
    url = source.strip()
    if not url:
        raise BadRequest("url is empty")
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("url is not valid Unicode (it contains a lone UTF-16 surrogate)") from None
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"url is longer than {MAX_URL_LENGTH} characters")
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme}:" if scheme else "a URL without scheme"
        raise TargetNotAllowed(f"only http://, https:// and s3:// URLs are allowed, got {shown}")
    if scheme == "s3" and not limits.allow_s3:
        raise TargetNotAllowed("s3:// URIs are not accepted over this public URL; send an https:// "
                               "link or the image, or invoke the function with IAM credentials")
    if limits.deadline is not None:
        limits.deadline.check(f"fetching {redact_url(url)}")
    clock = _Clock.start(limits)
    try:
        if scheme == "s3":
            return _fetch_s3(url, limits, clock)
        return _fetch_http(url, limits, clock)
    except PoseError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract is "PoseError only"
        # No exc_info: exception texts may quote the URL with its query string.
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f"{frame.filename}:{frame.lineno}" if frame else "?"
        log.error("unexpected fetch failure for %s: %s at %s", redact_url(url), type(exc).__name__, where)
        raise UpstreamError(f"fetching the image failed: {type(exc).__name__}") from None


# --------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # canonical ASCII host: punycode, no trailing dot, IP literals canonical
    port: int
    request_target: str  # path + query, percent-encoded
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.request_target}"


def _parse_http_url(url: str) -> _Target:
    """Split and validate an http(s) URL; BadRequest if malformed, 403 if not allowed."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"url is longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_CHARS.search(url):
        raise BadRequest("url contains control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadRequest(f"malformed url: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetNotAllowed(f"only http:// and https:// URLs can be fetched, got {scheme or 'no'} scheme")
    if "@" in parts.netloc:
        raise TargetNotAllowed("credentials in URLs (user:password@host) are not allowed")
    if not parts.hostname:
        raise BadRequest("url has no host")
    if parts.netloc.startswith("["):  # urlsplit passes IPvFuture ("[v1.fe]") on as a host name
        try:
            ipaddress.IPv6Address(parts.hostname)
        except ValueError:
            raise BadRequest("url's bracketed host is not an IPv6 address") from None
    if port == 0:
        raise BadRequest("url has port 0")
    host, literal = netguard.normalize_host(parts.hostname)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    query = quote(parts.query, safe=_QUERY_SAFE)
    target = path + (f"?{query}" if query else "")
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), target, literal)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed
    return left


class _DeadlineMixin:
    """Socket whose every blocking operation waits at most
    ``min(op_timeout, time left until deadline)``, so a server dripping one byte per
    second cannot keep us past the deadline (http.client only knows per-op timeouts)."""

    deadline: float = float("inf")
    op_timeout: float | None = None

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed
        self.settimeout(left if self.op_timeout is None else min(self.op_timeout, left))  # type: ignore[attr-defined]

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._arm()
        return super().recv_into(*args, **kwargs)  # type: ignore[misc]

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self._arm()
        return super().recv(*args, **kwargs)  # type: ignore[misc]

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._arm()
        return super().sendall(*args, **kwargs)  # type: ignore[misc]


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _tls_context() -> ssl.SSLContext:
    """System trust store, hostname checking, TLS >= 1.2; built once (loading CAs costs ms)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            ctx = ssl.create_default_context()
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.sslsocket_class = _DeadlineSSLSocket
            _ssl_context = ctx
        return _ssl_context


class _InterimSkippingResponse(http.client.HTTPResponse):
    """Skips every interim 1xx response before the final one (RFC 9110 15.2: a client must
    accept them even unasked), e.g. ``103 Early Hints`` from a CDN; ``http.client`` skips
    only ``100 Continue``. A 101 is final (we never ask to switch protocols): a 502 later.
    Each skipped head is read under the same header limits and socket deadline."""

    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        if 100 <= status < 200 and status != 101:
            return version, http.client.CONTINUE, reason  # begin() skips its headers
        return version, status, reason


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) connection to an already-vetted address.

    ``self.host`` stays the URL's host name (Host header, SNI, certificate check); the TCP
    connection goes to ``address`` and nowhere else; no second DNS lookup happens.
    """

    def __init__(self, target: _Target, address: netguard.IPAddress, limits: FetchLimits, deadline: float) -> None:
        super().__init__(target.host, target.port, timeout=limits.read_timeout)
        self.response_class = _InterimSkippingResponse
        self.default_port = 443 if target.scheme == "https" else 80
        self._target = target
        self._address = address
        self._connect_timeout = limits.connect_timeout
        self._deadline = deadline

    def connect(self) -> None:
        family = socket.AF_INET6 if self._address.version == 6 else socket.AF_INET
        sock = _DeadlineSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.settimeout(min(self._connect_timeout, _remaining(self._deadline)))
            sock.connect((str(self._address), self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._target.scheme == "https":
                # Handshake bounded by the connect timeout as well (inherited by wrap_socket).
                sock = _tls_context().wrap_socket(sock, server_hostname=self.host)  # type: ignore[assignment]
        except BaseException:
            sock.close()
            raise
        sock.deadline = self._deadline
        sock.op_timeout = self.timeout
        self.sock = sock


def _open(target: _Target, addresses: list[netguard.IPAddress], limits: FetchLimits,
          deadline: float) -> _PinnedConnection:
    """Connect to the first vetted address that answers (IPv6 may be unroutable in Lambda)."""
    last: BaseException | None = None
    for address in addresses:
        conn = _PinnedConnection(target, address, limits, deadline)
        try:
            conn.connect()
            return conn
        except ssl.SSLError:
            conn.close()
            raise  # a TLS failure is about the host, not this address
        except OSError as exc:
            conn.close()
            last = exc
            if time.monotonic() >= deadline:
                break
    assert last is not None
    raise last


def _request(conn: _PinnedConnection, target: _Target, limits: FetchLimits) -> http.client.HTTPResponse:
    conn.putrequest("GET", target.request_target, skip_accept_encoding=True)
    conn.putheader("User-Agent", limits.user_agent)
    conn.putheader("Accept", ACCEPT)
    conn.putheader("Accept-Encoding", "identity")
    conn.putheader("Connection", "close")
    conn.endheaders()
    return conn.getresponse()


def _read_capped(resp: http.client.HTTPResponse, max_bytes: int, host: str) -> bytes:
    """Read the body, refusing to hold more than ``max_bytes`` whatever the headers say."""
    declared = resp.length  # parsed Content-Length; None for chunked/absent/invalid
    lengths = {v.strip() for v in resp.msg.get_all("Content-Length") or []}
    if len(lengths) > 1 and not resp.chunked:
        # http.client uses the first; RFC 9112 6.3: the framing is broken, the body unknown
        # (a truncated image would otherwise be blamed on the image, not on its host).
        raise UpstreamError(f"{host} sent conflicting Content-Length headers")
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"image is {declared} bytes, over the limit of {max_bytes}")
    buf = bytearray()
    while True:
        chunk = resp.read1(min(_CHUNK, max_bytes + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
        if len(buf) > max_bytes:
            raise PayloadTooLarge(f"image is larger than the limit of {max_bytes} bytes")
    if declared is not None and len(buf) < declared:
        # read1() reports a short body as EOF rather than IncompleteRead.
        raise UpstreamError(f"{host} closed the connection after {len(buf)} of {declared} bytes")
    return bytes(buf)


def _media_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower()[:100] or None


def _translate(exc: BaseException, host: str, clock: _Clock) -> PoseError:
    """Map socket/TLS/http.client failures to the caller-facing error."""
    if isinstance(exc, _DeadlinePassed) or time.monotonic() >= clock.expires:
        return clock.timeout(f"fetching the image from {host}")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{host} timed out")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UpstreamError(f"TLS certificate of {host} could not be verified: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return UpstreamError(f"TLS handshake with {host} failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return UpstreamError(f"{host} refused the connection")
    if isinstance(exc, ConnectionResetError):
        return UpstreamError(f"{host} reset the connection")
    if isinstance(exc, http.client.HTTPException):
        return UpstreamError(f"{host} sent a broken HTTP response: {type(exc).__name__}")
    if isinstance(exc, OSError):
        return UpstreamError(f"could not connect to {host}: {exc.strerror or type(exc).__name__}")
    return UpstreamError(f"fetching from {host} failed: {type(exc).__name__}")


def _redirect_target(resp: http.client.HTTPResponse, target: _Target, redirects: int, limit: int) -> str:
    """The absolute URL a redirect points at, or UpstreamError."""
    location = resp.getheader("Location")
    if not location:
        raise UpstreamError(f"image host answered {resp.status} without a Location header")
    if redirects >= limit:
        raise UpstreamError(f"image host redirected more than {limit} times")
    try:  # http.client decodes headers as latin-1; servers send UTF-8
        location = location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    try:
        return urljoin(target.url, location.strip())
    except ValueError:  # e.g. "http://[::1" (an unclosed IPv6 literal)
        raise UpstreamError(f"image host redirected to an invalid URL: {redact_url(location)}") from None


def _fetch_http(url: str, limits: FetchLimits, clock: _Clock) -> Fetched:
    deadline = clock.expires
    redirects = 0
    current = url
    while True:
        try:
            target = _parse_http_url(current)
        except BadRequest as exc:
            if redirects == 0:
                raise
            raise UpstreamError(f"image host redirected to an invalid URL: {exc.message}") from None
        try:
            addresses = netguard.vet_target(target.host, target.port, limits.allow_private, _remaining(deadline))
        except TimeoutError:
            raise clock.timeout(f"resolving {target.host}") from None
        conn: _PinnedConnection | None = None
        try:
            conn = _open(target, addresses, limits, deadline)
            resp = _request(conn, target, limits)
            status = resp.status
            if status in REDIRECT_STATUSES:
                current = _redirect_target(resp, target, redirects, limits.max_redirects)
                redirects += 1
                log.debug("following redirect %d to %s", redirects, redact_url(current))
                continue
            if not 200 <= status < 300:
                raise UpstreamError(f"image host answered {status} {resp.reason[:60]}".rstrip())
            encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
            if encoding not in ("identity", ""):
                # We asked for identity; decoding gzip/br here would open a decompression bomb.
                raise UpstreamError(
                    f"image host sent a compressed body (Content-Encoding: {encoding[:40]}) "
                    "although identity was requested"
                )
            data = _read_capped(resp, limits.max_bytes, target.host)
            if not data:
                raise UnsupportedImage(f"image host answered {status} with an empty body: no image bytes")
            return Fetched(
                data=data,
                content_type=_media_type(resp.getheader("Content-Type")),
                source_kind="http",
                final_url=redact_url(target.url),
                bytes_read=len(data),
                redirects=redirects,
            )
        except PoseError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated to a PoseError
            raise _translate(exc, target.host, clock) from None
        finally:
            if conn is not None:
                conn.close()


# ----------------------------------------------------------------------------------- S3

def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key). The key is taken verbatim (not URL-decoded,
    like the AWS CLI), so keys with spaces, '?' or '#' work."""
    if uri[:5].lower() != "s3://":
        raise BadRequest("S3 URIs look like s3://bucket/key")
    bucket, sep, key = uri[5:].partition("/")
    if not bucket:
        raise BadRequest("S3 URI has no bucket: expected s3://bucket/key")
    check_bucket(bucket)
    if not sep or not key:
        raise BadRequest("S3 URI has no object key: expected s3://bucket/key")
    if len(key.encode("utf-8")) > MAX_S3_KEY_BYTES:
        raise BadRequest(f"S3 object key is longer than {MAX_S3_KEY_BYTES} bytes")
    return bucket, key


def check_bucket(bucket: str) -> None:
    """BadRequest unless ``bucket`` is a bucket name as botocore accepts it (no '/', so no
    prefix can ride along)."""
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise BadRequest(f"invalid S3 bucket name {bucket[:64]!r}")


def _fetch_s3(uri: str, limits: FetchLimits, clock: _Clock) -> Fetched:
    bucket, key = parse_s3_uri(uri)
    shown = redact_url(uri)
    try:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError:  # pragma: no cover - boto3 is part of the image
        raise PoseError("s3:// URIs need boto3, which is not installed") from None

    if time.monotonic() >= clock.expires:
        raise clock.timeout(f"reading {shown}")
    try:
        client = s3client.client(limits, clock.expires - time.monotonic())
        resp = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        raise _s3_error(exc, shown) from None
    except NoCredentialsError:
        # The deployment's doing, not a bug: locally (serve, the CLI, ipython) nothing may be
        # configured; on Lambda the function's role always provides credentials.
        raise TargetNotAllowed(
            f"cannot read {shown}: no AWS credentials are configured (on Lambda the function's role "
            "provides them; locally set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        ) from None
    except (BotoCoreError, OSError) as exc:
        raise _s3_transport_error(exc, shown) from None
    data = _read_s3_body(resp, limits, clock, shown)
    if not data:
        raise UnsupportedImage(f"S3 object {shown} is empty (0 bytes): no image bytes")
    return Fetched(
        data=data,
        content_type=_media_type(resp.get("ContentType")),
        source_kind="s3",
        final_url=shown,
        bytes_read=len(data),
        redirects=0,
    )


def _read_s3_body(resp: dict, limits: FetchLimits, clock: _Clock, shown: str) -> bytes:
    """The object's bytes under the size cap and the deadline (checked between chunks)."""
    body = resp["Body"]
    try:
        length = resp.get("ContentLength")
        if length is not None and length > limits.max_bytes:
            raise PayloadTooLarge(f"image is {length} bytes, over the limit of {limits.max_bytes}")
        buf = bytearray()
        while True:
            if time.monotonic() >= clock.expires:
                raise clock.timeout(f"reading {shown}")
            chunk = body.read(min(_CHUNK, limits.max_bytes + 1 - len(buf)))
            if not chunk:
                return bytes(buf)
            buf += chunk
            if len(buf) > limits.max_bytes:
                raise PayloadTooLarge(f"image is larger than the limit of {limits.max_bytes} bytes")
    except PoseError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/urllib3 read errors
        raise _s3_transport_error(exc, shown) from None
    finally:
        body.close()


def _s3_error(exc: Any, shown: str) -> PoseError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFound(f"S3 object {shown} does not exist")
    if code == "NoSuchBucket":
        return NotFound(f"S3 bucket of {shown} does not exist")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return TargetNotAllowed(
            f"access to {shown} denied (the function's role needs s3:GetObject; without "
            "s3:ListBucket S3 also answers 403 for missing objects)"
        )
    if code == "InvalidObjectState":  # the object's own state, not S3's: no retry helps
        return TargetNotAllowed(f"{shown} is archived (Glacier or Deep Archive); restore it before classifying")
    if code in ("InvalidBucketName", "KeyTooLongError", "InvalidArgument"):
        return BadRequest(f"S3 rejected {shown}: {code}")
    return UpstreamError(f"S3 answered {status or ''} {code or 'error'} for {shown}".replace("  ", " "))


def _s3_transport_error(exc: BaseException, shown: str) -> PoseError:
    from botocore.exceptions import ConnectTimeoutError, ParamValidationError, ReadTimeoutError

    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
        return UpstreamTimeout(f"S3 timed out reading {shown}")
    if isinstance(exc, ParamValidationError):
        return BadRequest(f"invalid S3 URI {shown}")
    return UpstreamError(f"reading {shown} from S3 failed: {type(exc).__name__}")
