"""The production ingress routes only the public API, per host (issue 17 item 3): every route of
the four services' OpenAPIs is taken, and each public one must be routed on its own service's
host, while no internal route, health probe, metrics, ops page or API doc is matched by any rule on
any host — also when asked for in the forms a client can bend a path into (upper case, a trailing
slash, doubled slashes, dot segments, percent-encoding).

Matching is ingress-nginx's (https://kubernetes.github.io/ingress-nginx/user-guide/ingress-path-matching/):
when any Ingress of a host sets `nginx.ingress.kubernetes.io/use-regex` (or `rewrite-target`), every
path of that host becomes `location ~* "^<path>"`, a case-insensitive regular expression searched
from the start of the URI; otherwise Exact is `location = <path>` and Prefix is element-wise prefix
matching. nginx matches a location against the normalised URI: percent-encoded octets decoded,
`.` and `..` segments resolved, repeated slashes merged (merge_slashes is on by default)."""

from __future__ import annotations

import asyncio
import importlib
import posixpath
import re
import uuid
from functools import cache
from typing import Any
from urllib.parse import unquote

import pytest

from flourish.local.services import SERVICES
from shared.internal import INTERNAL_ROUTES as INTERNAL
from tests.deploy.manifests import Manifest
from tests.deploy.test_manifests import of_kind

# Routes a service calls on another, never a person through the ingress: shared/internal.py's one
# list (per service, (method, path template)). The ingress cannot route by method, so a path with
# any internal method is not routed at all (consent's family contact: staff's PUT and DELETE too).
INTERNAL_ROUTES: dict[str, set[str]] = {service: {path for _method, path in routes}
                                        for service, routes in INTERNAL.items()}
# For operators and the cluster only: probes, metrics, the ops page, the API's docs.
OPERATIONAL = {"/healthz", "/readyz", "/metrics", "/ops", "/ops.json", "/ops/summary", "/docs", "/docs/oauth2-redirect", "/redoc",
               "/openapi.json", "/asyncapi", "/asyncapi.json", "/health/live", "/health/ready"}


@cache
def openapi_paths() -> dict[str, tuple[str, ...]]:
    """Every path template of each service's OpenAPI (apps are built in a loop: their Kafka
    clients need one; nothing is started)."""
    async def build() -> dict[str, tuple[str, ...]]:
        return {name: tuple(importlib.import_module(f"services.{name}.app").app().openapi()["paths"])
                for name in SERVICES}
    return asyncio.run(build())


def sample(template: str) -> str:
    """A concrete path for a template: each parameter an id-like value."""
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), template)


def variants(path: str) -> list[str]:
    """The ways a client may spell the same path (nginx normalises them before matching)."""
    head, _, last = path.rpartition("/")
    return [path, path.upper(), path + "/", path.replace("/", "//"), f"{head}/./{last}",
            f"{head}/x/../{last}", f"{head}/%{ord(last[0]):02X}{last[1:]}" if last else path,
            path.replace("/", "%2F").replace("%2F", "/", 1)]


def normalise(uri: str) -> str:
    """The URI as nginx matches locations against it."""
    path = unquote(uri.split("?", 1)[0])
    path = re.sub(r"/{2,}", "/", path)
    trailing = path.endswith("/") and path != "/"
    resolved = posixpath.normpath(path)
    return resolved + ("/" if trailing and resolved != "/" else "")


def ingress_locations(objects: list[Manifest]) -> dict[str, list[tuple[str, str, str]]]:
    """host → [(kind, pattern, backend service)], kind one of regex, exact, prefix; rules without a
    host go under "*" (they answer for every host)."""
    ingresses = of_kind(objects, "Ingress")
    regex_hosts = {rule.get("host", "*") for ing in ingresses for rule in ing["spec"].get("rules", [])
                   if (ing["metadata"].get("annotations") or {}).get("nginx.ingress.kubernetes.io/use-regex") == "true"
                   or "nginx.ingress.kubernetes.io/rewrite-target" in (ing["metadata"].get("annotations") or {})}
    locations: dict[str, list[tuple[str, str, str]]] = {}
    for ing in ingresses:
        if ing["spec"].get("defaultBackend"):
            locations.setdefault("*", []).append(("prefix", "/", ing["spec"]["defaultBackend"]["service"]["name"]))
        for rule in ing["spec"].get("rules", []):
            host = rule.get("host", "*")
            for entry in rule.get("http", {}).get("paths", []):
                backend = entry["backend"]["service"]["name"]
                path_type = entry.get("pathType", "ImplementationSpecific")
                if host in regex_hosts:
                    kind = "regex"
                elif path_type == "Exact":
                    kind = "exact"
                else:
                    kind = "prefix"
                locations.setdefault(host, []).append((kind, entry["path"], backend))
    return locations


def routed(locations: dict[str, list[tuple[str, str, str]]], host: str, uri: str) -> set[str]:
    """The backends any location of the host (or of a host-less rule) would send the URI to."""
    path = normalise(uri)
    hits: set[str] = set()
    for kind, pattern, backend in locations.get(host, []) + locations.get("*", []):
        if kind == "regex":
            matched = re.match(pattern if pattern.startswith("^") else f"^{pattern}", path, re.IGNORECASE) is not None
        elif kind == "exact":
            matched = path == pattern
        else:
            prefix = pattern.rstrip("/")
            matched = prefix == "" or path == prefix or path.startswith(prefix + "/")
        if matched:
            hits.add(backend)
    return hits


@pytest.fixture(scope="module")
def production(overlays: dict[str, list[Manifest]]) -> list[Manifest]:
    return overlays["production"]


def hosts_of(objects: list[Manifest]) -> dict[str, str]:
    """service → its host name, from the rules' backends."""
    hosts: dict[str, str] = {}
    for ing in of_kind(objects, "Ingress"):
        for rule in ing["spec"]["rules"]:
            backends = {p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
            assert len(backends) == 1, f"{rule.get('host')}: one host routes to one service, not {backends}"
            service = backends.pop().removeprefix("flourish-").removesuffix("-api")
            assert rule.get("host", "").startswith(f"{service}."), rule.get("host")
            hosts[service] = rule["host"]
    return hosts


def test_the_internal_routes_named_here_exist():
    paths = openapi_paths()
    for service, internal in INTERNAL_ROUTES.items():
        assert internal <= set(paths[service]), f"{service}: {sorted(internal - set(paths[service]))} no longer exist"


def test_every_public_route_is_routed_on_its_own_services_host(production):
    locations, hosts = ingress_locations(production), hosts_of(production)
    assert set(hosts) == {*SERVICES, "web"}
    for service, paths in openapi_paths().items():
        for template in paths:
            if template in INTERNAL_ROUTES.get(service, set()) or template in OPERATIONAL:
                continue
            assert routed(locations, hosts[service], sample(template)) == {f"flourish-{service}-api"}, (
                f"{service} {template}: public but not routed on {hosts[service]} (add its rule to ingress.yaml)")


def test_no_internal_operational_or_docs_route_is_matched_on_any_host(production):
    locations = ingress_locations(production)
    hosts = [*hosts_of(production).values(), "*", "unknown.example"]
    for template in sorted(OPERATIONAL):
        for uri in variants(sample(template)):
            for host in hosts:
                assert not routed(locations, host, uri), f"{uri} ({template}) is routed on {host}"
    # An internal route reaches its service through no host (another service may have a public
    # route of the same shape: consent's subject-access export is the DPO's).
    for service, internal in INTERNAL_ROUTES.items():
        for template in sorted(internal):
            for uri in variants(sample(template)):
                for host in hosts:
                    assert f"flourish-{service}-api" not in routed(locations, host, uri), (
                        f"{service}'s internal {uri} ({template}) is routed on {host}")


def test_the_web_host_routes_every_page_to_the_web_and_nothing_to_an_api(production):
    """The web (services/web) has its own host: its pages (any path but the operational ones) go to
    the web only; no API route is reachable through it (the web calls the APIs inside the cluster)."""
    locations, host = ingress_locations(production), hosts_of(production)["web"]
    for uri in ("/", "/sign-in", "/auth/callback", "/classes/x/screening", "/static/web.css", "/opsy", "/pupils/1",
                "/admin/agencies", "/operations"):
        assert routed(locations, host, uri) == {"flourish-web"}, uri
    for service, paths in openapi_paths().items():
        for template in paths:
            assert f"flourish-{service}-api" not in routed(locations, host, sample(template))


def test_there_is_no_catch_all_and_every_rule_is_anchored(production):
    for ing in of_kind(production, "Ingress"):
        assert "defaultBackend" not in ing["spec"]
        for rule in ing["spec"]["rules"]:
            assert rule.get("host"), "a rule without a host answers for every host name"
            for entry in rule["http"]["paths"]:
                assert entry["path"] != "/" and entry["path"].endswith("$"), f"{rule['host']}: {entry['path']} is not anchored"
                assert entry["pathType"] == "ImplementationSpecific"  # regex paths: the API server accepts them only so


def test_the_ingress_limits_request_rates_and_uses_no_snippets(production):
    for ing in of_kind(production, "Ingress"):
        annotations: dict[str, Any] = ing["metadata"]["annotations"]
        assert int(annotations["nginx.ingress.kubernetes.io/limit-rps"]) > 0
        assert int(annotations["nginx.ingress.kubernetes.io/limit-connections"]) > 0
        assert int(annotations["nginx.ingress.kubernetes.io/limit-burst-multiplier"]) >= 1
        assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
        # Snippet annotations are off by default in ingress-nginx (and a risk when on): HSTS comes
        # from the controller's ConfigMap (docs/deployment.md).
        assert not any(key.endswith("-snippet") for key in annotations)
        assert set(ing["spec"]["tls"][0]["hosts"]) == {rule["host"] for rule in ing["spec"]["rules"]}


def test_the_matcher_agrees_with_ingress_nginx_on_the_cases_its_docs_describe():
    """A check of the model itself (the docs' examples): regex mode is case-insensitive and
    anchored at the start only; Prefix is element-wise; Exact is exact; nginx normalises first."""
    regex = {"h": [("regex", "/foo/.*", "s")]}
    assert routed(regex, "h", "/foo/bar") == {"s"} and routed(regex, "h", "/FOO/bar") == {"s"}
    assert routed(regex, "h", "/x/foo/bar") == set()
    anchored = {"h": [("regex", "/foo$", "s")]}
    assert routed(anchored, "h", "/foo") == {"s"} and routed(anchored, "h", "/foobar") == set()
    assert routed(anchored, "h", "/x/../foo") == {"s"} and routed(anchored, "h", "//foo") == {"s"}
    assert routed(anchored, "h", "/%66oo") == {"s"}
    prefix = {"h": [("prefix", "/foo", "s")]}
    assert routed(prefix, "h", "/foo/bar") == {"s"} and routed(prefix, "h", "/foobar") == set()
    exact = {"h": [("exact", "/foo", "s")]}
    assert routed(exact, "h", "/foo") == {"s"} and routed(exact, "h", "/foo/") == set()
