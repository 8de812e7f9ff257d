"""The webhook delivery pods (reporting's consumers) reach agencies on the internet and nothing
inside: whatever NetworkPolicy lets them open a connection to an outside address on 443 must
except the private, CGNAT, loopback, link-local, metadata and cluster ranges (issue 16 item 5)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.deploy.manifests import OVERLAYS
from tests.deploy.test_manifests import of_kind, selector_matches, synthetic_pods

MUST_EXCEPT = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private (and the cluster's pod and service networks)
    "100.64.0.0/10",  # CGNAT
    "127.0.0.0/8", "169.254.0.0/16", "168.63.129.16/32",  # loopback, link-local and cloud metadata
    "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",
    "fc00::/7", "fe80::/10", "::1/128", "::ffff:0:0/96", "2002::/16", "2001::/32",
)]
DELIVERY_POD = "Deployment/flourish-reporting-consumers"


def outside_rules(objects: list[Any], pod: dict[str, str]) -> list[dict[str, Any]]:
    """Every egress rule of every policy selecting `pod` that can reach an address outside the
    cluster (no peers at all, or an ipBlock peer)."""
    found = []
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if "Egress" not in spec["policyTypes"] or not selector_matches(spec["podSelector"], pod):
            continue
        for rule in spec.get("egress", []):
            if rule.get("to") is None or any("ipBlock" in peer for peer in rule["to"]):
                found.append(rule)
    return found


def reaches(rule: dict[str, Any], address: str, port: int) -> bool:
    """Whether this rule lets a connection to address:port out (Kubernetes semantics: no ports = all)."""
    ports = {p["port"] for p in rule.get("ports", [])}
    if ports and port not in ports:
        return False
    if rule.get("to") is None:
        return True
    ip = ipaddress.ip_address(address)
    for peer in rule["to"]:
        block = peer.get("ipBlock")
        if block and ip in ipaddress.ip_network(block["cidr"]) and not any(
                ip in ipaddress.ip_network(e) for e in block.get("except", [])):
            return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_delivery_pods_reach_the_internet_on_443_but_no_inside_range(overlays, overlay):  # type: ignore[no-untyped-def]
    objects = overlays[overlay]
    pod = synthetic_pods(objects)[DELIVERY_POD]
    rules = outside_rules(objects, pod)
    assert any(reaches(rule, "93.184.216.34", 443) for rule in rules), "agencies must be reachable"
    assert any(reaches(rule, "2606:4700::1111", 443) for rule in rules), "agencies on IPv6 too"
    for network in MUST_EXCEPT:
        for address in (network.network_address, network.broadcast_address, network[network.num_addresses // 2]):
            open_by = [rule for rule in rules if reaches(rule, str(address), 443)]
            assert not open_by, f"{overlay}: {address} ({network}) reachable on 443 by {open_by}"
    # Nothing else leaves but the SMTP relay's port: no rule opens every port to anywhere.
    assert not [rule for rule in rules if not rule.get("ports")]
    assert {p["port"] for rule in rules for p in rule["ports"]} <= {443, 587}


def test_a_policy_without_the_exceptions_fails_the_check(overlays):  # type: ignore[no-untyped-def]
    objects = overlays[OVERLAYS[0]]
    pod = synthetic_pods(objects)[DELIVERY_POD]
    widened = [*objects, {"kind": "NetworkPolicy", "metadata": {"name": "open"}, "spec": {
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "consumers"}}, "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "TCP", "port": 443}]}]}}]
    assert any(reaches(rule, "10.0.0.1", 443) for rule in outside_rules(widened, pod))
    assert not any(reaches(rule, "10.0.0.1", 443) for rule in outside_rules(objects, pod))
