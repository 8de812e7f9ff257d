"""Where webhooks may go: https outside development, and only to globally routable addresses
(OWASP SSRF prevention) unless a setting allow-lists a network (tests allow 127.0.0.1).

Two places apply the same rule. `check_endpoint` vets a URL when an agency registers it and before
each delivery (a clear refusal, early). `pinned_transport` is what actually enforces it: its network
backend resolves the host ONCE per connection, vets every address, and connects to a vetted
address itself — there is no second resolution an attacker's DNS (rebinding) could answer
differently. TLS still runs against the URL's host name (SNI and certificate verification), and the
Host header is the URL's. A refusal is a `Refused` error whose text is only "refused"."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Globally routable by the address registries but still inside a cloud tenant's network:
# Azure's wire server / DNS (168.63.129.16) and metadata endpoints that some clouds place on
# ordinary-looking addresses. Everything else not globally routable is caught by the rules below.
_ALSO_REFUSED: tuple[Network, ...] = tuple(ipaddress.ip_network(net) for net in (
    "168.63.129.16/32",      # Azure wire server
    "100.64.0.0/10",         # CGNAT / shared address space (also not is_global; named for reviewers)
    "192.0.0.0/24",          # IETF protocol assignments (incl. 192.0.0.192 Oracle metadata)
    "198.18.0.0/15",         # benchmarking
    "64:ff9b:1::/48",        # local-use NAT64 (RFC 8215)
    "fd00:ec2::/32",         # AWS IMDS over IPv6 (inside fc00::/7 anyway)
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

class EndpointRefused(ValueError):
    """The URL may not receive webhooks; the message says why (never echoing secrets)."""

class Refused(httpx.ConnectError):
    """Raised by the pinned transport: the host resolved (now) to an address webhooks may not
    reach. Its text is only "refused": the delivery log must not say where the host pointed."""

    def __init__(self) -> None:
        super().__init__("refused")

def networks(allowed: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in allowed]

def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: IPv4-mapped, IPv4-compatible, 6to4 (2002::/16),
    Teredo (2001::/32, the client), NAT64 (64:ff9b::/96)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None

def permitted(address: Address, allowed: Sequence[Network] = ()) -> bool:
    """Whether a webhook may connect to `address`: allow-listed, or globally routable (and, for an
    IPv6 address carrying an IPv4 one, that one too). 6to4 and Teredo are refused outright: relays
    of deprecated transition mechanisms, never an agency's real endpoint."""
    if any(address in network for network in allowed):
        return True
    if any(address.version == network.version and address in network for network in _ALSO_REFUSED):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None or address.teredo is not None:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return permitted(inner, ())  # the allow-list never applies through an embedding
    return bool(address.is_global) and not address.is_multicast

async def check_endpoint(url: str, *, environment: str, allowed: Sequence[Network]) -> None:
    """Raise EndpointRefused unless `url` may receive webhooks now. Host names are resolved and
    every address they resolve to is checked (the transport checks again when it connects)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointRefused("the endpoint is not a valid URL") from None
    if parts.scheme not in ("https", "http"):
        raise EndpointRefused("the endpoint must be an https URL")
    if parts.scheme != "https" and environment != "development":
        raise EndpointRefused("the endpoint must be an https URL")
    if not parts.hostname:
        raise EndpointRefused("the endpoint names no host")
    if parts.username or parts.password:
        raise EndpointRefused("the endpoint may not carry credentials")
    if parts.fragment:
        raise EndpointRefused("the endpoint may not carry a fragment")
    for address in await _addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80)):
        if not permitted(address, allowed):
            raise EndpointRefused("the endpoint resolves to an address that is not globally routable")

async def lookup(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver answers now (tests replace this function to
    play a rebinding DNS server)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]

async def _addresses(host: str, port: int) -> list[Address]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        found = [ipaddress.ip_address(answer.split("%")[0]) for answer in await lookup(host, port)]
    except (OSError, ValueError):
        raise EndpointRefused("the endpoint's host does not resolve") from None
    if not found:
        raise EndpointRefused("the endpoint's host does not resolve")
    return found

def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None

class PinnedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves each host once, refuses the connection unless
    every address is permitted, and connects to a vetted address. httpcore then starts TLS on that
    stream with `server_hostname` = the URL's host, so SNI and certificate checks are unchanged."""

    def __init__(self, allowed: Sequence[Network], inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allowed = list(allowed)
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await _addresses(host, port)
        except EndpointRefused:
            raise Refused() from None
        if not all(permitted(address, self.allowed) for address in addresses):
            raise Refused()
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise Refused()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pinned_transport(allowed: Sequence[Network], *, limits: httpx.Limits | None = None,
                     verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go only where `permitted` says (see PinnedBackend).
    No proxy (trust_env off): a proxy would resolve the host itself, after our check."""
    limits = limits or httpx.Limits()
    transport = httpx.AsyncHTTPTransport(verify=verify, trust_env=False, limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001 - httpx offers no network_backend argument
        ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
        max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry, http1=True, http2=False,
        network_backend=PinnedBackend(allowed),
    )
    return transport
