"""SSRF guard: forbidden targets in every spelling are refused by DEFAULT settings, before
any DNS lookup or connection; resolution happens once and the connection goes to the
address that was checked (no DNS-rebinding window).

The sandbox has no internet, so "public addresses are allowed" is tested at the policy
level (``forbidden_reason``), never by connecting out.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from yogapose import fetch as fetch_mod
from yogapose import netguard
from yogapose.config import Settings, load_settings
from yogapose.errors import BadRequest, TargetNotAllowed, UpstreamError
from yogapose.fetch import fetch

pytestmark = pytest.mark.timeout(30)

DEFAULT = load_settings({})


@pytest.fixture
def trap(loopback_httpserver: HTTPServer) -> Iterator[HTTPServer]:
    """A loopback server that must never receive a request."""
    loopback_httpserver.clear()
    loopback_httpserver.expect_request("/").respond_with_data(b"SHOULD NOT BE REACHED")
    yield loopback_httpserver
    loopback_httpserver.clear()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Record (and block) every DNS lookup and outgoing connect made by the code under test."""
    calls: list[tuple[str, object]] = []

    def fake_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(("dns", host))
        raise socket.gaierror(socket.EAI_NONAME, "blocked by test")

    def fake_connect(self, address):  # type: ignore[no-untyped-def]
        calls.append(("connect", address))
        raise ConnectionRefusedError("blocked by test")

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", fake_connect)
    return calls


def test_default_settings_do_not_allow_private() -> None:
    assert DEFAULT.allow_private is False


def test_default_refuses_a_realloopback_httpserver(trap: HTTPServer) -> None:
    url = trap.url_for("/")
    assert fetch(url, Settings(allow_private=True)).data == b"SHOULD NOT BE REACHED"  # it is up
    trap.clear_log()
    with pytest.raises(TargetNotAllowed) as info:
        fetch(url, DEFAULT)
    assert info.value.http_status == 403
    assert "loopback" in info.value.message
    assert trap.log == []


# Every spelling of a forbidden target. "{port}" is the trap server's port, so that a
# guard which let the request through would be caught by the trap's log as well.
FORBIDDEN = [
    "http://127.0.0.1:{port}/",
    "http://127.0.0.2:{port}/",
    "http://2130706433:{port}/",  # decimal
    "http://0177.0.0.1:{port}/",  # octal
    "http://0x7f000001:{port}/",  # hex
    "http://0x7f.1:{port}/",  # hex + short form
    "http://0x7F.0.0.1:{port}/",  # upper-case hex
    "http://127.1:{port}/",  # short form
    "http://127.0.1:{port}/",
    "http://127.0.0.1.:{port}/",  # trailing dot
    "http://\uff11\uff12\uff17.0.0.1:{port}/",  # fullwidth digits
    "http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11:{port}/",  # fullwidth + ideographic dots
    "http://[::1]:{port}/",
    "http://[0:0:0:0:0:0:0:1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped
    "http://[::ffff:7f00:1]:{port}/",  # IPv4-mapped, hex
    "http://[::127.0.0.1]:{port}/",  # IPv4-compatible (deprecated)
    "http://[64:ff9b::7f00:1]:{port}/",  # NAT64 of loopback
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]:{port}/",  # 6to4 of loopback
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of the metadata address
    "http://localhost:{port}/",
    "http://LOCALHOST.:{port}/",
    "http://LocalHost/",
    "http://localhost.localdomain/",
    "http://images.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",  # ECS/Lambda container credentials
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 in decimal
    "http://0251.0376.0251.0376/",  # ... in octal
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",  # zone identifier
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # CGNAT
    "http://100.100.100.200/",  # Alibaba Cloud metadata
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://0.0.0.0:{port}/",
    "http://0:{port}/",  # 0.0.0.0 short form
    "http://[::]:{port}/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://192.0.2.1/",  # documentation
    "http://198.18.0.1/",  # benchmarking
    "http://[2001:db8::1]/",
    "https://127.0.0.1:{port}/",
    "HTTP://127.0.0.1:{port}/",
    "file:///etc/passwd",
    "FILE:///etc/passwd",
    "ftp://example.com/pose.jpg",
    "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:11211/stat",
    "ldap://127.0.0.1/",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "jar:http://example.com/x.jar!/",
    "example.com/pose.jpg",  # no scheme
    "//example.com/pose.jpg",  # scheme-relative
    "http://user:pass@example.com/pose.jpg",
    "http://user@127.0.0.1:{port}/",
    "http://example.com@127.0.0.1:{port}/",
]


@pytest.mark.parametrize("template", FORBIDDEN)
def test_forbidden_targets_are_refused_without_dns_or_connection(template: str, trap: HTTPServer, no_network) -> None:
    url = template.format(port=trap.port)
    with pytest.raises(TargetNotAllowed) as info:
        fetch(url, DEFAULT)
    assert info.value.http_status == 403
    assert no_network == []  # no DNS lookup, no connect
    assert trap.log == []
    assert "SHOULD NOT" not in info.value.message


def test_the_table_is_big_enough() -> None:
    assert len(FORBIDDEN) >= 25


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://[fe80::1]/", "http://0.0.0.0/",
     "http://224.0.0.1/", "http://[::ffff:169.254.169.254]/", "http://192.0.2.1/"],
)
def test_allow_private_still_refuses_metadata_and_special_addresses(url: str, no_network) -> None:
    with pytest.raises(TargetNotAllowed):
        fetch(url, Settings(allow_private=True))
    assert no_network == []


@pytest.mark.parametrize(
    ("host", "addresses"),
    [
        ("metadata.google.internal", ["169.254.169.254"]),
        ("instance-data", ["169.254.169.254"]),
        ("127.0.0.1.nip.io", ["127.0.0.1"]),
        ("internal.corp.example", ["10.1.2.3"]),
        ("v6only.example", ["::1"]),
        ("mapped.example", ["::ffff:10.0.0.1"]),
        ("mixed.example", ["93.184.216.34", "127.0.0.1"]),  # ANY forbidden address refuses
        ("mixed6.example", ["2606:2800:220:1:248:1893:25c8:1946", "fd00:ec2::254"]),
    ],
)
def test_names_resolving_to_forbidden_addresses_are_refused(host: str, addresses: list[str], monkeypatch) -> None:
    lookups: list[str] = []
    connects: list[object] = []

    def fake_getaddrinfo(name, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(name)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, port) if ":" not in a else (a, port, 0, 0))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connects.append(address))
    with pytest.raises(TargetNotAllowed) as info:
        fetch(f"http://{host}/pose.jpg", DEFAULT)
    assert lookups == [host]
    assert connects == []
    assert host in info.value.message


# ------------------------------------------------------------------------ DNS rebinding


def _rebinding_resolver(first: str, later: str, calls: list[str]):  # type: ignore[no-untyped-def]
    def fake_getaddrinfo(name, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(name)
        address = first if len(calls) == 1 else later
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    return fake_getaddrinfo


def test_rebinding_connection_goes_to_the_checked_address(loopback_httpserver: HTTPServer, monkeypatch) -> None:
    # First answer: the (allowed) test server. Any later lookup would yield the metadata
    # address, which is always refused and unroutable here, so a second resolution would
    # either raise or hang instead of returning the image.
    server = loopback_httpserver
    server.clear()
    server.expect_request("/pose.jpg").respond_with_data(b"from-checked-address")
    calls: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", _rebinding_resolver("127.0.0.1", "169.254.169.254", calls))
    got = fetch(f"http://rebind.example:{server.port}/pose.jpg",
                Settings(allow_private=True, connect_timeout=0.5, fetch_deadline=2))
    assert got.data == b"from-checked-address"
    assert calls == ["rebind.example"]
    # The Host header still names the host from the URL, not the IP we pinned.
    assert server.log[0][0].headers["Host"] == f"rebind.example:{server.port}"
    server.clear()


def test_rebinding_public_then_loopback_connects_only_to_the_public_address(monkeypatch) -> None:
    calls: list[str] = []
    connects: list[object] = []

    def fake_connect(self, address):  # type: ignore[no-untyped-def]
        connects.append(address)
        raise ConnectionRefusedError("test: no internet here")

    monkeypatch.setattr(socket, "getaddrinfo", _rebinding_resolver("93.184.216.34", "127.0.0.1", calls))
    monkeypatch.setattr(socket.socket, "connect", fake_connect)
    with pytest.raises(UpstreamError, match="refused"):
        fetch("http://rebind.example/pose.jpg", DEFAULT)
    assert calls == ["rebind.example"]
    assert connects == [("93.184.216.34", 80)]


def test_each_redirect_hop_is_resolved_once_and_rechecked(loopback_httpserver: HTTPServer, monkeypatch) -> None:
    server = loopback_httpserver
    server.clear()
    server.expect_request("/start").respond_with_data(
        b"", status=302, headers={"Location": f"http://second.example:{server.port}/next"}
    )
    lookups: list[str] = []

    def fake_getaddrinfo(name, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(name)
        address = "127.0.0.1" if name == "first.example" else "169.254.169.254"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(TargetNotAllowed, match="second.example"):
        fetch(f"http://first.example:{server.port}/start", Settings(allow_private=True))
    assert lookups == ["first.example", "second.example"]
    assert [entry[0].path for entry in server.log] == ["/start"]
    server.clear()


# ------------------------------------------------------------------ the policy function


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "1.1.1.1", "52.95.110.1", "2606:2800:220:1:248:1893:25c8:1946",
     "2a00:1450:4001:82b::2004", "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::1"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert netguard.forbidden_reason(ip) is None
    assert netguard.is_forbidden_address(ip) is False


@pytest.mark.parametrize(
    ("address", "allowed_with_allow_private"),
    [
        ("127.0.0.1", True), ("10.0.0.1", True), ("172.16.0.1", True), ("192.168.0.1", True),
        ("100.64.0.1", True), ("::1", True), ("fd12::1", True), ("::ffff:10.0.0.1", True),
        ("169.254.169.254", False), ("fd00:ec2::254", False), ("fe80::1", False), ("0.0.0.0", False),
        ("::", False), ("224.0.0.1", False), ("ff02::1", False), ("255.255.255.255", False),
        ("240.0.0.1", False), ("192.0.2.1", False), ("198.51.100.1", False), ("203.0.113.1", False),
        ("198.18.0.1", False), ("2001:db8::1", False), ("2001::1", False), ("64:ff9b::a9fe:a9fe", False),
        ("2002:a9fe:a9fe::", False), ("::127.0.0.1", False), ("100::1", False), ("fec0::1", False),
    ],
)
def test_forbidden_addresses(address: str, allowed_with_allow_private: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert netguard.is_forbidden_address(ip) is True
    assert netguard.is_forbidden_address(ip, allow_private=True) is (not allowed_with_allow_private)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"), ("0", "0.0.0.0"), ("0x", "0.0.0.0"),
        ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"), ("0xc0.0xa8.0x1.0x1", "192.168.1.1"),
        ("4294967295", "255.255.255.255"),
    ],
)
def test_ipv4_spellings_parse_like_inet_aton(host: str, expected: str) -> None:
    assert str(netguard.parse_ipv4_literal(host)) == expected
    # The platform resolver must agree, or checking and connecting could diverge.
    if host not in ("0x",):
        assert socket.inet_ntoa(socket.inet_aton(host.rstrip("."))) == expected


@pytest.mark.parametrize("host", ["example.com", "images.example", "1example.com", "xn--bcher-kva.example"])
def test_names_are_not_ip_literals(host: str) -> None:
    assert netguard.parse_ipv4_literal(host) is None


@pytest.mark.parametrize("host", ["4294967296", "1.2.3.4.5", "256.0.0.1", "1.2.65536", "08.0.0.1", "0x1g.0.0.1",
                                  "example.123"])
def test_invalid_numeric_hosts_are_bad_requests(host: str) -> None:
    with pytest.raises(BadRequest):
        netguard.normalize_host(host)


def test_runtime_api_endpoint_parsing(monkeypatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    assert netguard.runtime_api_endpoint() == (ipaddress.ip_address("127.0.0.1"), 9001)
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "garbage")
    assert netguard.runtime_api_endpoint() is None


def test_fetch_module_does_not_import_boto3_or_requests() -> None:
    # Cold start: the HTTP path must stay stdlib-only (boto3 loads on first s3:// URI).
    import subprocess
    import sys

    code = ("import sys, yogapose.fetch; "
            "print('boto3' in sys.modules, 'requests' in sys.modules, 'urllib3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=fetch_mod.__file__.rsplit("/yogapose/", 1)[0])
    assert out.stdout.split() == ["False", "False", "False"]
