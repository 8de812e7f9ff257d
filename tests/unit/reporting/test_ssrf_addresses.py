"""Which addresses a webhook may reach: only globally routable ones (OWASP SSRF guidance), with
IPv4 carried inside IPv6 judged as the IPv4 it carries."""

from __future__ import annotations

import ipaddress

import pytest

from services.reporting.sharing.endpoints import EndpointRefused, check_endpoint, embedded_ipv4, networks, permitted

REFUSED = [
    "10.1.2.3", "172.16.0.1", "192.168.0.1", "127.0.0.1", "0.0.0.0", "169.254.169.254", "224.0.0.1",
    "100.64.0.1", "100.127.255.254",  # CGNAT (shared address space)
    "168.63.129.16",  # Azure wire server: globally routable on paper
    "192.0.0.192", "198.18.0.1", "240.0.0.1", "255.255.255.255",
    "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:100.64.0.1",  # IPv4-mapped
    "::10.0.0.1",  # IPv4-compatible
    "2002:0a00:0001::1", "2002:7f00:0001::1", "2002:0808:0808::1",  # 6to4: refused whatever it carries
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::6440:1", "64:ff9b:1::808:808",  # NAT64 of private; local NAT64
]
ACCEPTED = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_not_globally_routable_is_refused(address: str) -> None:
    assert not permitted(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ACCEPTED)
def test_globally_routable_is_accepted(address: str) -> None:
    assert permitted(ipaddress.ip_address(address))


def test_the_allow_list_admits_its_own_network_only_and_never_through_an_embedding() -> None:
    allowed = networks(["127.0.0.1/32"])
    assert permitted(ipaddress.ip_address("127.0.0.1"), allowed)
    assert not permitted(ipaddress.ip_address("127.0.0.2"), allowed)
    assert not permitted(ipaddress.ip_address("::ffff:127.0.0.1"), allowed)
    assert not permitted(ipaddress.ip_address("64:ff9b::7f00:1"), allowed)


def test_embedded_ipv4_is_found() -> None:
    found = {a: embedded_ipv4(ipaddress.IPv6Address(a)) for a in
             ("::ffff:10.0.0.1", "2002:0a00:0001::1", "64:ff9b::a00:1", "::10.0.0.1")}
    assert set(map(str, found.values())) == {"10.0.0.1"}
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1111")) is None


@pytest.mark.parametrize("address", ["100.64.0.1", "168.63.129.16", "[2002:0a00:0001::1]", "[64:ff9b::a00:1]",
                                     "[2001:0:4136:e378:8000:63bf:f5ff:fffe]"])
async def test_registration_check_refuses_them_too(address: str) -> None:
    with pytest.raises(EndpointRefused):
        await check_endpoint(f"https://{address}/hooks", environment="production", allowed=[])
