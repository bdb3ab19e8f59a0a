"""Guarded HTTP fetching against real loopback servers.

pytest-httpserver covers well-behaved servers; ``RawServer`` (a scripted TCP server)
covers the misbehaving ones no framework will impersonate: lying Content-Length, slow
drips, stalled headers, gzip despite ``Accept-Encoding: identity``, non-TLS on https.
Loopback is only reachable because these tests set ``allow_private=True``.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from pytest_httpserver import HTTPServer
from werkzeug import Response

import yogapose
from yogapose import fetch as fetch_mod
from yogapose import netguard
from yogapose.config import Settings
from yogapose.errors import (
    BadRequest,
    PayloadTooLarge,
    TargetNotAllowed,
    UnsupportedImage,
    UnusableImage,
    UpstreamError,
    UpstreamTimeout,
)
from yogapose.fetch import Fetched, FetchLimits, fetch, redact_url
from yogapose.metadata import Preprocessing
from yogapose.preprocess import Preprocessor

pytestmark = pytest.mark.timeout(30)

LOOPBACK = FetchLimits(allow_private=True, connect_timeout=1.0, read_timeout=1.0, fetch_deadline=5.0)


@pytest.fixture
def httpserver(loopback_httpserver: HTTPServer) -> Iterator[HTTPServer]:
    """pytest-httpserver's fixture, but on 127.0.0.1 and private to this module."""
    loopback_httpserver.clear()
    yield loopback_httpserver
    loopback_httpserver.clear()


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------- scripted TCP server


class RawServer:
    """Loopback TCP server running ``script(conn, stop)`` for every connection."""

    def __init__(self, script: Callable[[socket.socket, threading.Event], None]) -> None:
        self.script = script
        self.stop = threading.Event()
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def url(self, path: str = "/img.jpg", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.script(conn, self.stop)
            except OSError:
                pass  # the client gave up: that is what most scripts provoke

    def read_request(self, conn: socket.socket) -> bytes:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        self.requests.append(data)
        return data

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        self._acceptor.join(2)
        for t in self._threads:
            t.join(2)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[RawServer, socket.socket, threading.Event], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Callable[[RawServer, socket.socket, threading.Event], None]) -> RawServer:
        holder: list[RawServer] = []
        server = RawServer(lambda conn, stop: script(holder[0], conn, stop))
        holder.append(server)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def send_response(head: str, body: bytes = b"") -> Callable[[RawServer, socket.socket, threading.Event], None]:
    def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)

    return script


# ------------------------------------------------------------------------------- basics


def test_ok_returns_bytes_and_content_type(httpserver: HTTPServer) -> None:
    image = jpeg_bytes()
    httpserver.expect_request("/pose.jpg").respond_with_data(image, content_type="image/jpeg; charset=binary")
    got = fetch(httpserver.url_for("/pose.jpg") + "?X-Amz-Signature=secret", LOOPBACK)
    assert isinstance(got, Fetched)
    assert got.data == image
    assert got.content_type == "image/jpeg"
    assert got.source_kind == "http"
    assert got.bytes_read == len(image)
    assert got.redirects == 0
    assert got.final_url == f"http://127.0.0.1:{httpserver.port}/pose.jpg"
    assert "secret" not in repr(got) and repr(image[:8]) not in repr(got)
    # The query string still reached the server: redaction is for logs only.
    assert httpserver.log[0][0].args["X-Amz-Signature"] == "secret"


def test_sends_honest_user_agent_and_identity_encoding(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ua").respond_with_data(b"x")
    settings = FetchLimits(allow_private=True, user_agent="yogapose-test/9 (unit test)")
    fetch(httpserver.url_for("/ua"), settings)
    headers = httpserver.log[0][0].headers
    assert headers["User-Agent"] == "yogapose-test/9 (unit test)"
    assert headers["Accept-Encoding"] == "identity"
    assert "image/jpeg" in headers["Accept"]
    assert headers["Host"] == f"127.0.0.1:{httpserver.port}"
    assert "Authorization" not in headers and "Cookie" not in headers


def test_default_user_agent_names_the_project(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ua").respond_with_data(b"x")
    fetch(httpserver.url_for("/ua"), LOOPBACK)
    agent = httpserver.log[0][0].headers["User-Agent"]
    assert agent == LOOPBACK.user_agent
    assert agent.startswith(f"yogapose/{yogapose.__version__} (")


def test_non_ascii_and_spaces_in_path_are_percent_encoded(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/bäume/my pose.jpg").respond_with_data(b"ok")
    got = fetch(f"http://127.0.0.1:{httpserver.port}/bäume/my pose.jpg", LOOPBACK)
    assert got.data == b"ok"


@pytest.mark.parametrize("status", [404, 500, 403, 503])
def test_upstream_error_status_becomes_502(httpserver: HTTPServer, status: int) -> None:
    httpserver.expect_request("/missing").respond_with_data(b"nope", status=status)
    with pytest.raises(UpstreamError) as info:
        fetch(httpserver.url_for("/missing"), LOOPBACK)
    assert info.value.http_status == 502
    assert f"answered {status}" in info.value.message


def test_connection_refused_is_502() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connect is refused
        with pytest.raises(UpstreamError, match="refused"):
            fetch(f"http://127.0.0.1:{port}/x.jpg", LOOPBACK)


def test_unresolvable_host_is_502() -> None:
    with pytest.raises(UpstreamError, match="does not resolve"):
        fetch("http://no-such-host.invalid/x.jpg", LOOPBACK)


@pytest.mark.parametrize(
    "bad",
    [None, 42, b"http://example.com/", "", "   ", "http://" + "a" * 2100 + ".com/", "http://exa\nmple.com/",
     "http://example.com/\r\nX-Injected: 1", "http://[::1/", "http://example.com:99999/", "http:///path-only",
     "http://exa mple.com/", "http://1.2.3.4.5/", "http://256.1.1.1/", "http://08.1.1.1/",
     "http://[v1.fe]/x.jpg", "http://[example.com]/x.jpg"],  # bracketed, not IPv6: was resolved as a name
)
def test_malformed_urls_are_400(bad: object) -> None:
    with pytest.raises(BadRequest):
        fetch(bad, LOOPBACK)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- timeouts


def test_server_that_never_answers_times_out_504(raw_server) -> None:
    def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        stop.wait(10)

    server = raw_server(script)
    settings = FetchLimits(allow_private=True, read_timeout=0.3, fetch_deadline=3.0)
    with pytest.raises(UpstreamTimeout) as info:
        fetch(server.url(), settings)
    assert info.value.http_status == 504


def test_header_drip_cannot_outlast_the_deadline_504(raw_server) -> None:
    # Each byte arrives well within read_timeout; only the total deadline can stop this.
    def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(0.05):
                return
            conn.sendall(bytes([byte]))

    server = raw_server(script)
    settings = FetchLimits(allow_private=True, read_timeout=0.5, fetch_deadline=0.8)
    with pytest.raises(UpstreamTimeout, match="deadline"):
        fetch(server.url(), settings)


def test_slow_drip_body_exceeding_the_deadline_is_504(raw_server) -> None:
    def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n")
        for _ in range(500):
            if stop.wait(0.05):
                return
            conn.sendall(b"0123456789")

    server = raw_server(script)
    settings = FetchLimits(allow_private=True, read_timeout=0.5, fetch_deadline=0.8)
    with pytest.raises(UpstreamTimeout, match="deadline"):
        fetch(server.url(), settings)


def test_slow_handler_with_httpserver_is_504(httpserver: HTTPServer) -> None:
    release = threading.Event()

    def slow(_request):  # type: ignore[no-untyped-def]
        release.wait(3)
        return Response(b"late", content_type="image/jpeg")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    try:
        with pytest.raises(UpstreamTimeout):
            fetch(httpserver.url_for("/slow"), FetchLimits(allow_private=True, read_timeout=0.5, fetch_deadline=1.0))
    finally:
        release.set()  # free the single-threaded server for the next test


# ---------------------------------------------------------------------------- size caps


def test_content_length_over_cap_is_413_without_reading_the_body(raw_server) -> None:
    def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n")
        stop.wait(10)  # never send the body: a client that waited for it would time out

    server = raw_server(script)
    with pytest.raises(PayloadTooLarge) as info:
        fetch(server.url(), FetchLimits(allow_private=True, max_bytes=1000, read_timeout=5, fetch_deadline=10))
    assert info.value.http_status == 413
    assert "50000000" in info.value.message


def test_oversized_with_content_length_from_httpserver_is_413(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/big").respond_with_data(b"x" * 1001, content_type="image/jpeg")
    with pytest.raises(PayloadTooLarge):
        fetch(httpserver.url_for("/big"), FetchLimits(allow_private=True, max_bytes=1000))


def test_exactly_the_cap_is_fine(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/edge").respond_with_data(b"x" * 1000)
    assert fetch(httpserver.url_for("/edge"), FetchLimits(allow_private=True, max_bytes=1000)).bytes_read == 1000


def test_oversized_chunked_stream_is_413(httpserver: HTTPServer) -> None:
    def endless():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"y" * 500

    httpserver.expect_request("/stream").respond_with_response(Response(endless(), content_type="image/jpeg"))
    with pytest.raises(PayloadTooLarge):
        fetch(httpserver.url_for("/stream"), FetchLimits(allow_private=True, max_bytes=1000))


def test_raw_chunked_over_cap_is_413_and_under_cap_is_read(raw_server) -> None:
    def chunked(total_chunks: int) -> Callable[[RawServer, socket.socket, threading.Event], None]:
        def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
            server.read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(total_chunks):
                conn.sendall(b"100\r\n" + b"z" * 256 + b"\r\n")
            conn.sendall(b"0\r\n\r\n")

        return script

    small = raw_server(chunked(3))
    assert fetch(small.url(), LOOPBACK).data == b"z" * 768
    big = raw_server(chunked(40))
    with pytest.raises(PayloadTooLarge):
        fetch(big.url(), FetchLimits(allow_private=True, max_bytes=4096))


def test_no_content_length_close_delimited_over_cap_is_413(raw_server) -> None:
    server = raw_server(send_response("HTTP/1.0 200 OK\nContent-Type: image/jpeg\n", b"w" * 5000))
    with pytest.raises(PayloadTooLarge):
        fetch(server.url(), FetchLimits(allow_private=True, max_bytes=4096))


def test_content_length_smaller_than_body_reads_only_declared_bytes(raw_server) -> None:
    server = raw_server(send_response("HTTP/1.1 200 OK\nContent-Length: 100\n", b"a" * 100 + b"b" * 50000))
    got = fetch(server.url(), FetchLimits(allow_private=True, max_bytes=4096))
    assert got.data == b"a" * 100


def test_content_length_larger_than_body_is_502(raw_server) -> None:
    server = raw_server(send_response("HTTP/1.1 200 OK\nContent-Length: 1000\n", b"a" * 10))
    with pytest.raises(UpstreamError, match="10 of 1000"):
        fetch(server.url(), LOOPBACK)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP"])
def test_compressed_body_is_refused_not_decompressed(raw_server, encoding: str) -> None:
    import gzip

    bomb = gzip.compress(b"\0" * 2_000_000)  # 2 MB of zeros in ~2 KB
    server = raw_server(send_response(
        f"HTTP/1.1 200 OK\nContent-Encoding: {encoding}\nContent-Length: {len(bomb)}\n", bomb))
    with pytest.raises(UpstreamError, match="compressed"):
        fetch(server.url(), FetchLimits(allow_private=True, max_bytes=100_000))
    assert b"accept-encoding: identity" in server.requests[0].lower()


@pytest.mark.parametrize("interim", ["103 Early Hints\nLink: </style.css>; rel=preload\n",
                                     "102 Processing\n", "100 Continue\n"])
def test_interim_1xx_responses_are_skipped(raw_server, interim: str) -> None:
    """RFC 9110 15.2: a client accepts interim responses before the final one, unasked."""
    image = jpeg_bytes()
    head = f"HTTP/1.1 {interim}\nHTTP/1.1 {interim}\nHTTP/1.1 200 OK\nContent-Length: {len(image)}\n"
    server = raw_server(send_response(head, image))
    assert fetch(server.url(), LOOPBACK).data == image


def test_conflicting_content_lengths_are_the_hosts_fault_502(raw_server) -> None:
    """http.client reads by the first value: the image came out cut short and was a 415
    (not retryable) instead of the host's broken framing."""
    image = jpeg_bytes()
    head = f"HTTP/1.1 200 OK\nContent-Length: 10\nContent-Length: {len(image)}\n"
    server = raw_server(send_response(head, image))
    with pytest.raises(UpstreamError, match="conflicting Content-Length"):
        fetch(server.url(), LOOPBACK)
    same = raw_server(send_response(f"HTTP/1.1 200 OK\nContent-Length: {len(image)}\n"
                                    f"Content-Length: {len(image)}\n", image))
    assert fetch(same.url(), LOOPBACK).data == image  # repeated but equal: one length


def test_switching_protocols_is_not_skipped_but_502(raw_server) -> None:
    server = raw_server(send_response("HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n"))
    with pytest.raises(UpstreamError, match="101"):
        fetch(server.url(), LOOPBACK)


@pytest.mark.parametrize("status", [200, 204])
def test_an_empty_body_is_415_naming_the_host_as_the_source(httpserver: HTTPServer, status: int) -> None:
    httpserver.expect_request("/empty.jpg").respond_with_data(b"", status=status, content_type="image/jpeg")
    with pytest.raises(UnsupportedImage, match=f"answered {status} with an empty body"):
        fetch(httpserver.url_for("/empty.jpg"), LOOPBACK)


def test_broken_status_line_is_502(raw_server) -> None:
    server = raw_server(send_response("SSH-2.0-OpenSSH_9.0\n"))
    with pytest.raises(UpstreamError):
        fetch(server.url(), LOOPBACK)


# ---------------------------------------------------------------------------- redirects


def test_redirect_chain_within_limit(httpserver: HTTPServer) -> None:
    image = jpeg_bytes()
    base = f"http://127.0.0.1:{httpserver.port}"
    httpserver.expect_request("/a").respond_with_data(b"", status=301, headers={"Location": f"{base}/b"})
    httpserver.expect_request("/b").respond_with_data(b"", status=302, headers={"Location": "/c/d"})  # absolute path
    httpserver.expect_request("/c/d").respond_with_data(
        b"", status=307, headers={"Location": "../e.jpg?sig=1"})  # relative
    httpserver.expect_request("/e.jpg").respond_with_data(image, content_type="image/jpeg")
    got = fetch(f"{base}/a", LOOPBACK)
    assert got.data == image
    assert got.redirects == 3
    assert got.final_url == f"{base}/e.jpg"
    assert [entry[0].path for entry in httpserver.log] == ["/a", "/b", "/c/d", "/e.jpg"]


def test_too_many_redirects_is_502(httpserver: HTTPServer) -> None:
    for i in range(5):
        httpserver.expect_request(f"/r{i}").respond_with_data(b"", status=302, headers={"Location": f"/r{i + 1}"})
    with pytest.raises(UpstreamError, match="more than 3"):
        fetch(httpserver.url_for("/r0"), LOOPBACK)
    assert len(httpserver.log) == 4  # the original request + 3 followed redirects


def test_max_redirects_zero_refuses_the_first_redirect(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/r").respond_with_data(b"", status=301, headers={"Location": "/img"})
    with pytest.raises(UpstreamError, match="more than 0"):
        fetch(httpserver.url_for("/r"), FetchLimits(allow_private=True, max_redirects=0))


def test_redirect_to_an_unparsable_url_is_502_saying_so(raw_server) -> None:
    server = raw_server(send_response("HTTP/1.1 302 Found\nLocation: http://[::1\nContent-Length: 0\n"))
    with pytest.raises(UpstreamError, match="redirected to an invalid URL"):
        fetch(server.url(), LOOPBACK)


def test_redirect_without_location_is_502(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/r").respond_with_data(b"", status=302)
    with pytest.raises(UpstreamError, match="Location"):
        fetch(httpserver.url_for("/r"), LOOPBACK)


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://0xa9fea9fe/",  # 169.254.169.254 in hex
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "s3://bucket/key",
        "http://user:pw@127.0.0.1/",
    ],
)
def test_redirect_to_always_forbidden_target_is_403_even_with_allow_private(httpserver: HTTPServer,
                                                                             location: str) -> None:
    # ALLOW_PRIVATE_URLS opens loopback/RFC 1918 for tests; metadata endpoints stay closed.
    httpserver.expect_request("/r").respond_with_data(b"", status=302, headers={"Location": location})
    with pytest.raises(TargetNotAllowed) as info:
        fetch(httpserver.url_for("/r"), LOOPBACK)
    assert info.value.http_status == 403


def test_redirect_to_private_address_is_403_under_the_default_policy(httpserver: HTTPServer, monkeypatch) -> None:
    # Let the default policy treat this one test server as if it were a public image host;
    # every redirect target is then judged by the real, unmodified rules.
    real = netguard.forbidden_reason
    server_ip = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(netguard, "forbidden_reason",
                        lambda ip, allow_private=False: None if ip == server_ip else real(ip, allow_private))
    port = httpserver.port
    targets = ["http://10.0.0.1/x.jpg", f"http://127.0.0.2:{port}/x.jpg", f"http://localhost:{port}/x.jpg",
               "http://192.168.1.1/", f"http://[::1]:{port}/x.jpg", "http://100.64.0.1/"]
    for i, target in enumerate(targets):
        httpserver.expect_request(f"/r{i}").respond_with_data(b"", status=302, headers={"Location": target})
    httpserver.expect_request("/ok").respond_with_data(b"fine")
    assert fetch(httpserver.url_for("/ok"), FetchLimits()).data == b"fine"  # the stand-in really is allowed
    for i in range(len(targets)):
        with pytest.raises(TargetNotAllowed):
            fetch(httpserver.url_for(f"/r{i}"), FetchLimits(connect_timeout=0.5, fetch_deadline=2))
    assert len(httpserver.log) == 1 + len(targets)  # no request ever followed a redirect


def test_runtime_api_address_is_refused_even_with_allow_private(httpserver: HTTPServer, monkeypatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", f"127.0.0.1:{httpserver.port}")
    with pytest.raises(TargetNotAllowed, match="Runtime API"):
        fetch(httpserver.url_for("/2018-06-01/runtime/invocation/next"), LOOPBACK)
    assert httpserver.log == []


def test_deadline_covers_the_whole_redirect_chain(raw_server) -> None:
    # Every hop answers quickly but late enough that three of them exceed the deadline.
    def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        stop.wait(0.35)
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n")

    server = raw_server(script)
    settings = FetchLimits(allow_private=True, read_timeout=1.0, fetch_deadline=0.9, max_redirects=5)
    with pytest.raises(UpstreamTimeout):
        fetch(server.url(), settings)
    assert 2 <= server.connections <= 4


# -------------------------------------------------------------------------------- TLS


def _make_cert(tmp_path: Path, common_name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``common_name`` signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "yogapose test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[HTTPServer, Path]]:
    ca, cert, key = _make_cert(tmp_path, "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=ctx)
    server.start()
    yield server, ca
    server.clear()
    if server.is_running():
        server.stop()


def _trusting(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.sslsocket_class = fetch_mod._DeadlineSSLSocket
    return ctx


def test_https_verifies_the_hostname_while_connecting_to_the_vetted_ip(tls_server, monkeypatch) -> None:
    server, ca = tls_server
    server.expect_request("/pose.jpg").respond_with_data(b"tls-ok", content_type="image/jpeg")
    monkeypatch.setattr(fetch_mod, "_tls_context", lambda: _trusting(ca))
    # Certificate is for "localhost": the name must travel as SNI/verification host.
    got = fetch(f"https://localhost:{server.port}/pose.jpg", LOOPBACK)
    assert got.data == b"tls-ok"
    assert got.final_url == f"https://localhost:{server.port}/pose.jpg"
    # Same server, reached by IP: the certificate does not cover 127.0.0.1 -> bad TLS, 502.
    with pytest.raises(UpstreamError, match="TLS certificate"):
        fetch(f"https://127.0.0.1:{server.port}/pose.jpg", LOOPBACK)


def test_untrusted_certificate_is_502(tls_server) -> None:
    server, _ca = tls_server  # the system trust store does not know the throwaway CA
    server.expect_request("/pose.jpg").respond_with_data(b"never")
    with pytest.raises(UpstreamError, match="TLS certificate") as info:
        fetch(f"https://localhost:{server.port}/pose.jpg", LOOPBACK)
    assert info.value.http_status == 502
    assert server.log == []


def test_plain_http_on_an_https_url_is_502(raw_server) -> None:
    def script(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(4096)  # the ClientHello, answered like a confused plain-HTTP server
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    server = raw_server(script)
    with pytest.raises(UpstreamError, match="TLS"):
        fetch(server.url(scheme="https"), LOOPBACK)


# -------------------------------------------------------- fetch + imaging (415 / 422)


def test_non_image_body_is_415_after_fetch(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/page").respond_with_data(b"<!doctype html><html><body>hi</body></html>",
                                                         content_type="text/html")
    got = fetch(httpserver.url_for("/page"), LOOPBACK)
    assert got.content_type == "text/html"
    with pytest.raises(UnsupportedImage) as info:
        Preprocessor(Preprocessing()).tensor(got.data, Settings.max_pixels)
    assert info.value.http_status == 415


def test_truncated_jpeg_is_422_after_fetch(raw_server) -> None:
    image = jpeg_bytes((400, 300))
    # The server declares half the file: fetch returns exactly that, imaging refuses it.
    cut = len(image) // 2
    server = raw_server(send_response(f"HTTP/1.1 200 OK\nContent-Type: image/jpeg\nContent-Length: {cut}\n", image))
    got = fetch(server.url(), LOOPBACK)
    assert got.data == image[:cut]
    with pytest.raises(UnusableImage) as info:
        Preprocessor(Preprocessing(jpeg_draft=False)).tensor(got.data, Settings.max_pixels)
    assert info.value.http_status == 422


def test_fetched_image_preprocesses(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/pose.jpg").respond_with_data(jpeg_bytes(), content_type="image/jpeg")
    got = fetch(httpserver.url_for("/pose.jpg"), LOOPBACK)
    assert Preprocessor(Preprocessing()).tensor(got.data, Settings.max_pixels).shape == (1, 150, 150, 3)


# ------------------------------------------------------------------------- redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@Images.Example.com:8443/a/b.jpg?X-Amz-Signature=abc#frag", "https://images.example.com:8443/a/b.jpg"),
        ("http://example.com/p.jpg?token=secret", "http://example.com/p.jpg"),
        ("s3://bucket/key/pose.jpg", "s3://bucket/key/pose.jpg"),
        ("s3://bucket/odd key?v=1#x.jpg", "s3://bucket/odd key?v=1#x.jpg"),  # keys are verbatim
        # Credentials that a '/', '?' or '#' in the password cut out of the authority.
        ("https://alice:hun/ter2PASS@example.com/a.jpg", "<malformed url>"),
        ("https://alice:p#ss@example.com/a.jpg", "<malformed url>"),
        ("https://alice:p?ss@example.com/a.jpg", "<malformed url>"),
        ("https://alice:12/34@example.com/a.jpg", "https://<withheld: looks like user:password@host>"),
        ("https://alice:99/x/y@host/a", "https://<withheld: looks like user:password@host>"),
        ("https://alice:1#x@host/", "https://<withheld: looks like user:password@host>"),
        ("https://al/ice:pw@example.com/a.jpg", "https://<withheld: looks like user:password@host>"),
        ("https://alice:p@ss@example.com/a.jpg", "https://example.com/a.jpg"),
        ("https://cdn.example.com/maps/@51.5/a@2x.jpg", "https://cdn.example.com/maps/@51.5/a@2x.jpg"),
        ("S3://AKIAEXAMPLE:pw@bucket/k.jpg", "s3://bucket/k.jpg"),
        ("s3://AKIAEXAMPLE:wJalr/S3cr3tPW@bucket/key.jpg", "s3://<withheld: looks like credentials>"),
        ("s3://bucket/a:b@c.jpg", "s3://bucket/a:b@c.jpg"),  # a key may hold both
        ("not a url", "<malformed url>"),
        ("http://[::1/", "<malformed url>"),
        (None, "<NoneType>"),
    ],
)
def test_redact_url(url: object, expected: str) -> None:
    assert redact_url(url) == expected


def test_unexpected_errors_become_502_and_logs_hold_no_query_string(monkeypatch, caplog) -> None:
    def boom(url: str, limits: FetchLimits, clock: object) -> Fetched:
        raise ValueError(f"bug while handling {url}")

    monkeypatch.setattr(fetch_mod, "_fetch_http", boom)
    with caplog.at_level("DEBUG", logger="yogapose.fetch"), pytest.raises(UpstreamError) as info:
        fetch("https://images.example/pose.jpg?X-Amz-Signature=topsecret", LOOPBACK)
    assert "topsecret" not in info.value.message
    assert "ValueError" in caplog.text and "images.example/pose.jpg" in caplog.text
    assert "topsecret" not in caplog.text
