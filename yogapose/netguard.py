"""Address policy for fetching untrusted URLs (the SSRF guard).

The function runs next to its AWS credentials (instance metadata on 169.254.169.254 /
fd00:ec2::254), the Lambda Runtime API (127.0.0.1:9001) and, in a VPC, private services.
A caller-supplied URL must never reach any of them, whatever spelling it uses.

Two rules make that hold:

1. Host spellings are normalised here exactly as a browser/``inet_aton`` would read them
   (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, fullwidth digits, trailing dots,
   IPv6 literals), so the address we check is the address the bytes would go to.
2. Every address a name resolves to is checked, and the caller connects to one of *those*
   addresses (``fetch`` never resolves again), so DNS rebinding has no window.

``ipaddress.is_global`` alone is not enough: on Python 3.12.1 multicast (224.0.0.1), NAT64
(64:ff9b::7f00:1) and 6to4 (2002:7f00:1::) forms of loopback all report ``is_global``. The
tables below are explicit; ``is_global`` is only a final belt-and-braces check.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from typing import Any

from .config import platform
from .errors import BadRequest, TargetNotAllowed, UpstreamError, UpstreamTimeout

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_v4 = ipaddress.IPv4Network
_v6 = ipaddress.IPv6Network

# Refused even with ALLOW_PRIVATE_URLS=true: nothing legitimate serves images here, and the
# cloud metadata / credential endpoints live here. Order matters only for the message.
ALWAYS_FORBIDDEN: tuple[tuple[ipaddress._BaseNetwork, str], ...] = (
    (_v4("0.0.0.0/8"), "unspecified/'this network' address"),
    (_v4("169.254.0.0/16"), "link-local address (cloud metadata endpoints live here)"),
    (_v4("100.100.100.200/32"), "cloud metadata address"),
    (_v4("224.0.0.0/4"), "multicast address"),
    (_v4("255.255.255.255/32"), "broadcast address"),
    (_v4("240.0.0.0/4"), "reserved address"),
    (_v6("::/128"), "unspecified address"),
    (_v6("fd00:ec2::/32"), "AWS metadata address (IMDS / EKS pod identity over IPv6)"),
    (_v6("fe80::/10"), "link-local address"),
    (_v6("fec0::/10"), "site-local address (deprecated)"),
    (_v6("ff00::/8"), "multicast address"),
)

# Refused by default; ALLOW_PRIVATE_URLS=true permits them (tests, local development).
PRIVATE: tuple[tuple[ipaddress._BaseNetwork, str], ...] = (
    (_v4("127.0.0.0/8"), "loopback address"),
    (_v4("10.0.0.0/8"), "private address (RFC 1918)"),
    (_v4("172.16.0.0/12"), "private address (RFC 1918)"),
    (_v4("192.168.0.0/16"), "private address (RFC 1918)"),
    (_v4("100.64.0.0/10"), "shared/CGNAT address (RFC 6598)"),
    (_v6("::1/128"), "loopback address"),
    (_v6("fc00::/7"), "unique-local address (RFC 4193)"),
)

# Not globally routable special-purpose ranges (IANA registries); always refused.
SPECIAL: tuple[tuple[ipaddress._BaseNetwork, str], ...] = (
    (_v4("192.0.0.0/24"), "IETF protocol assignment address"),
    (_v4("192.0.2.0/24"), "documentation address (TEST-NET-1)"),
    (_v4("198.51.100.0/24"), "documentation address (TEST-NET-2)"),
    (_v4("203.0.113.0/24"), "documentation address (TEST-NET-3)"),
    (_v4("198.18.0.0/15"), "benchmarking address"),
    (_v4("192.88.99.0/24"), "6to4 relay anycast address"),
    (_v6("64:ff9b:1::/48"), "local-use NAT64 address"),
    (_v6("100::/64"), "discard-only address"),
    (_v6("2001::/23"), "IETF protocol assignment address (incl. Teredo, benchmarking)"),
    (_v6("2001:db8::/32"), "documentation address"),
    (_v6("3fff::/20"), "documentation address"),
    (_v6("5f00::/16"), "SRv6 SID address"),
)

_GLOBAL_UNICAST_V6 = _v6("2000::/3")
_NAT64_WKP = _v6("64:ff9b::/96")
_IPV4_COMPAT = _v6("::/96")
_LOOPBACK_OR_UNSPEC_V6 = _v6("::/127")

# RFC 6761: these names always mean this machine; refuse them without asking DNS.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6",
                "ip6-localhost", "ip6-loopback")
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_HEX_NUMBER = re.compile(r"^0x[0-9a-f]*$")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address hidden in a mapped, NAT64, 6to4 or IPv4-compatible IPv6 address."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64_WKP:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _IPV4_COMPAT and ip not in _LOOPBACK_OR_UNSPEC_V6:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: IPAddress, allow_private: bool = False) -> str | None:
    """Why ``ip`` must not be fetched from, or None when it is allowed.

    ``allow_private`` opens loopback, RFC 1918, CGNAT and ULA ranges only; link-local
    (metadata), multicast, unspecified and reserved addresses stay closed regardless.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        hidden = embedded_ipv4(ip)
        if hidden is not None:
            kind, v4 = hidden
            if kind == "IPv4-compatible":
                return f"IPv4-compatible IPv6 address (deprecated form of {v4})"
            reason = forbidden_reason(v4, allow_private)
            return f"{reason} ({kind} form of {v4})" if reason else None
    for table, allowed in ((ALWAYS_FORBIDDEN, False), (PRIVATE, allow_private), (SPECIAL, False)):
        for net, reason in table:
            if ip.version == net.version and ip in net:
                return None if allowed else reason
    if ip.version == 6 and ip not in _GLOBAL_UNICAST_V6:
        return "not a global unicast IPv6 address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def is_forbidden_address(ip: IPAddress, allow_private: bool = False) -> bool:
    """True when fetching from ``ip`` is refused (see :func:`forbidden_reason`)."""
    return forbidden_reason(ip, allow_private) is not None


def connect_address(ip: IPAddress) -> IPAddress:
    """The address to actually connect to: IPv4-mapped IPv6 becomes plain IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_ipv4_number(part: str) -> int:
    if part.startswith("0x"):
        digits, base = part[2:], 16
        if digits == "":
            return 0  # WHATWG: "0x" alone is zero
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if digits == "" or not all(c in "0123456789abcdef"[:base] for c in digits):
        raise BadRequest(f"invalid IPv4 address component {part!r}")
    return int(digits, base)


def parse_ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` as an IPv4 address the way browsers and ``inet_aton`` do, or None.

    Accepts 1-4 dotted parts in decimal, octal (leading 0) or hex (0x), the last part
    filling the remaining bytes (``127.1``, ``2130706433``, ``0x7f.1``). A host whose last
    label is numeric but which is not a valid address is malformed (WHATWG URL rules), so
    it never reaches DNS where a resolver might read it differently.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    if not (last.isascii() and (last.isdigit() or _HEX_NUMBER.match(last))):
        return None
    if len(parts) > 4:
        raise BadRequest(f"invalid IPv4 address {host!r}")
    numbers = [_parse_ipv4_number(p) for p in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise BadRequest(f"invalid IPv4 address {host!r}: component out of range")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def normalize_host(host: str) -> tuple[str, IPAddress | None]:
    """Canonical ASCII host and, for IP literals, the address it denotes.

    ``host`` is the hostname from ``urlsplit`` (lower-cased, IPv6 brackets removed).
    Raises BadRequest for hosts that are not valid DNS names or IP literals and
    TargetNotAllowed for IPv6 zone identifiers (only meaningful for link-local).
    """
    if not host:
        raise BadRequest("URL has no host")
    if ":" in host:  # IPv6 literal (urlsplit only yields ':' from a bracketed host)
        if "%" in host:
            raise TargetNotAllowed("IPv6 zone identifiers are not allowed (link-local target)")
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise BadRequest(f"invalid IPv6 address [{host}]") from None
        return str(ip6), ip6
    if not host.isascii():
        try:
            # IDNA 2003 nameprep also maps fullwidth digits and ideographic full stops, so
            # "１２７。０。０。１" becomes "127.0.0.1" here and is caught below.
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise BadRequest("host is not a valid internationalised domain name") from None
    host = host.lower()
    ip4 = parse_ipv4_literal(host)
    if ip4 is not None:
        return str(ip4), ip4
    host = host.removesuffix(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise BadRequest("host is not a valid domain name")
    return host, None


def is_local_name(host: str) -> bool:
    """Names that mean "this machine" by definition (RFC 6761 ``localhost``)."""
    return host in _LOCAL_NAMES or host.endswith(".localhost")


def runtime_api_endpoint() -> tuple[IPAddress, int] | None:
    """The Lambda Runtime API address (``AWS_LAMBDA_RUNTIME_API``), refused even when
    private addresses are allowed: a request there could steal or fail invocations."""
    raw = platform("AWS_LAMBDA_RUNTIME_API") or ""
    host, sep, port = raw.rpartition(":")
    if not sep:
        return None
    try:
        return ipaddress.ip_address(host.strip("[]")), int(port)
    except ValueError:
        return None


def _resolve_error(host: str, error: BaseException) -> UpstreamError:
    if isinstance(error, socket.gaierror):
        if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return UpstreamError(f"host {host} does not resolve (no such domain)")
        return UpstreamError(f"could not resolve host {host}: {error.strerror or error}")
    return UpstreamError(f"could not resolve host {host}: {type(error).__name__}")


def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """All addresses ``host`` resolves to for TCP, in resolver order, within ``timeout``.

    ``getaddrinfo`` cannot be interrupted, so it runs in a daemon thread we stop waiting
    for at the deadline (the thread finishes on its own when the resolver gives up).
    DNS failures map to UpstreamError (502), a slow resolver to UpstreamTimeout (504).
    """
    box: dict[str, Any] = {}  # "infos": getaddrinfo's list, or "error": what it raised

    def work() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="yogapose-dns", daemon=True)
    worker.start()
    worker.join(max(timeout, 0.0))
    if worker.is_alive():
        raise UpstreamTimeout(f"resolving {host} timed out")
    error = box.get("error")
    if error is not None:
        raise _resolve_error(host, error)
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canon, sockaddr in box["infos"]:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            ip = ipaddress.ip_address(str(sockaddr[0]))
        except ValueError:
            continue
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            ip = ipaddress.IPv6Address(f"{str(ip).split('%')[0]}%{sockaddr[3]}")
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UpstreamError(f"host {host} has no IPv4/IPv6 address")
    return addresses


def vet_target(host: str, port: int, allow_private: bool, timeout: float) -> list[IPAddress]:
    """Resolve ``host`` once and return the addresses to connect to, or refuse.

    If ANY resolved address is forbidden the whole target is refused: a name that mixes a
    public and a private address is an attack, not a fallback list.
    """
    canonical, literal = normalize_host(host)
    if literal is None and not allow_private and is_local_name(canonical):
        raise TargetNotAllowed(f"target {canonical} is not allowed: it names this machine")
    addresses = [literal] if literal is not None else resolve(canonical, port, timeout)
    runtime_api = runtime_api_endpoint()
    for ip in addresses:
        reason = forbidden_reason(ip, allow_private)
        if reason is not None:
            shown = canonical if literal is not None else f"{canonical} ({ip})"
            raise TargetNotAllowed(f"target {shown} is not allowed: {reason}")
        if runtime_api is not None and (connect_address(ip), port) == (connect_address(runtime_api[0]), runtime_api[1]):
            raise TargetNotAllowed(f"target {canonical}:{port} is the Lambda Runtime API")
    return [connect_address(ip) for ip in addresses]
