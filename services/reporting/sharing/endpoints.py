"""Which webhook endpoints an agency may register: https outside development, and never an
address inside a private, loopback or link-local network unless a setting allow-lists it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointRefused(ValueError):
    """The URL may not receive webhooks; the message says why (never echoing secrets)."""


def networks(allowed: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in allowed]


def _internal(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
            or address.is_multicast or address.is_unspecified)


async def check_endpoint(url: str, *, environment: str, allowed: Sequence[Network]) -> None:
    """Raise EndpointRefused unless `url` may receive webhooks now. Host names are resolved and
    every address they resolve to is checked (the worker checks again before each delivery)."""
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
        if _internal(address) and not any(address in network for network in allowed):
            raise EndpointRefused(
                "the endpoint resolves to a private, loopback or link-local address that is not allow-listed"
            )


async def _addresses(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise EndpointRefused("the endpoint's host does not resolve") from None
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not found:
        raise EndpointRefused("the endpoint's host does not resolve")
    return found
