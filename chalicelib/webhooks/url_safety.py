"""Which webhook URLs may be called (SSRF), and the checked target an attempt connects to."""
from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import urllib.parse

DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 reserved characters and "%" stay as written in a path; anything else is percent-encoded.
PATH_SAFE = "/[]@!$&'()*+,;=:%~"

# Ranges `ipaddress` does not call private that still reach IPv4 space or special-purpose hosts.
SPECIAL_NETWORKS = (
    (ipaddress.ip_network("192.0.0.0/24"), "IETF protocol assignment (192.0.0.0/24)"),
    (ipaddress.ip_network("64:ff9b::/96"), "NAT64 (64:ff9b::/96) address embedding IPv4"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48) address embedding IPv4"),
    (ipaddress.ip_network("2002::/16"), "6to4 (2002::/16) address embedding IPv4"),
    (ipaddress.ip_network("::/96"), "IPv4-compatible (::a.b.c.d) IPv6"),
)


class WebhookUrlError(Exception):
    """A webhook URL we will not call; `reason` names why (never the path, query or a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsafeWebhookUrl(WebhookUrlError):
    """Not http(s), has credentials, or its host is (or resolves to) a non-public address."""


class UnresolvableWebhookHost(WebhookUrlError):
    """DNS gave no address: a 422 at submit, a retryable attempt at delivery."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one attempt connects: the checked addresses, and the name (ASCII, IDNA-encoded) for
    Host, SNI and the certificate."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (tests replace this to stay off the network)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def resolve(host: str, port: int, *, timeout: float | None, resolver=None) -> list[str]:
    """The addresses of `host` ([] when it has none). A lookup that outlasts `timeout` is
    UnresolvableWebhookHost: a slow DNS server (which a webhook's owner may run) cannot hold a
    dispatcher past its deadline."""
    lookup = resolver or resolve_host
    if timeout is None:
        try:
            return lookup(host, port)
        except (OSError, UnicodeError):
            return []
    found: list[str] = []

    def run() -> None:
        try:
            found.extend(lookup(host, port))
        except (OSError, UnicodeError):
            pass

    thread = threading.Thread(target=run, name="webhook-dns", daemon=True)
    thread.start()
    thread.join(max(timeout, 0))
    if thread.is_alive():
        raise UnresolvableWebhookHost(f"webhook_url host {host!r} did not resolve within {timeout:g} s")
    return found


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        if address.version == 4:
            return "link-local (169.254.0.0/16, where the cloud metadata service lives)"
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.version == 6 and address in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if address.is_unspecified:
        return "unspecified"
    for network, name in SPECIAL_NETWORKS:
        if address.version == network.version and address in network:
            return name
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved or not globally routable"
    return None


def check_url(url: str, *, allow_private: bool, resolve_names: bool = True, resolver=None,
              timeout: float | None = None) -> Target:
    """The target of a webhook URL, refused unless http(s), without credentials, and (unless
    `allow_private`) with every address its host resolves to public.

    `resolve_names=False` skips DNS when private addresses are allowed anyway (nothing to check);
    `timeout` bounds the DNS lookup (None: the system's own limits).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeWebhookUrl("webhook_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeWebhookUrl("webhook_url must be an http or https URL")
    if "@" in parts.netloc:
        raise UnsafeWebhookUrl("webhook_url must not contain credentials (user:password@); use webhook_secret")
    if not parts.hostname:
        raise UnsafeWebhookUrl("webhook_url has no host")
    host = ascii_host(parts.hostname)
    port = port or DEFAULT_PORTS[scheme]
    path = urllib.parse.quote(parts.path or "/", safe=PATH_SAFE)
    if parts.query:
        path += "?" + urllib.parse.quote(parts.query, safe=PATH_SAFE)
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    elif not resolve_names and allow_private:
        addresses = []
    else:
        addresses = resolve(host, port, timeout=timeout, resolver=resolver)
        if not addresses:
            raise UnresolvableWebhookHost(f"webhook_url host {host!r} does not resolve to an address")
    if not allow_private:
        for address in addresses:
            problem = address_problem(ipaddress.ip_address(address))
            if problem is not None:
                where = f"{host} is" if literal is not None else f"{host!r} resolves to {address},"
                raise UnsafeWebhookUrl(f"webhook_url host {where} a {problem} address; webhook "
                                       "receivers must be publicly reachable")
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))


def ascii_host(host: str) -> str:
    """The host as it goes on the wire: an internationalized name in its IDNA (punycode) form."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeWebhookUrl("webhook_url host is not a valid internationalized domain name "
                               "(IDNA); use its xn-- form") from None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
