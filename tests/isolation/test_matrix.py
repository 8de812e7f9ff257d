"""Issue 9 item 4, the HTTP half: every route of every service, enumerated from its OpenAPI, called
with trust A's real ids by staff of another academy of trust A (A2) and by a trust B token holding
every role: 403 or 404, or a success that carries none of A's data; and A's own token gets 2xx on
every GET, which proves the ids are real. A new route is in the matrix the day it is added; a new
command route fails here until it has a request body below."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.assessment.helpers import SAMPLE, roster_csv, upn
from tests.isolation.conftest import ACADEMY_ROLES, ALL_ROLES, World, fingerprint

SERVICES = ["assessment", "planning", "consent", "reporting"]

# Routes that hold no tenant data, each with the reason.
EXEMPT: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness: answers the same to anyone",
    ("GET", "/readyz"): "readiness of PostgreSQL and Kafka: no tenant data",
    ("GET", "/whoami"): "echoes the caller's own token back",
    ("GET", "/framework-schema"): "the JSON Schema every framework document satisfies: reference data",
    ("POST", "/frameworks"): "loads a framework into the caller's own trust (frameworks are keyed by owner trust)",
    ("GET", "/audit/public-key"): "the ledger's public signing key, published so that anyone can verify a proof",
}

# GET routes whose A-side answer is not a 2xx by design, for the positive control.
NOT_2XX_FOR_A: dict[tuple[str, str], str] = {}

# Path parameters that need another of A's ids than the default for that name.
PATH_OVERRIDES: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/pupils/{pupil_id}/erasure"): {"pupil_id": "erased_pupil_id"},
}

# Query parameters that filter by one of A's ids, and required ones that are not ids.
QUERY_IDS = {"pupil_id": "pupil_id", "academy_id": "academy_id", "agency_id": "agency_id", "share_id": "share_id",
             "consent_id": "decision_id", "class_id": "class_id"}
QUERY_VALUES = {"agency_category": "camhs", "data_kind": "report"}


VALIDATION_ERROR = "urn:flourish:problem:validation-error"
# A command naming A's data is refused: forbidden, not found, or (say, an agency id in the body that
# is no agency of the caller's trust) unprocessable; the body carries none of A's data either way.
REFUSALS = (403, 404, 409, 422)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _plan(ids: dict[str, str]) -> dict[str, Any]:
    return {"kind": "individual", "pupil_ids": [ids["pupil_id"]], "strand": "being", "targets": ["being.1"],
            "activities": ["Sand tray play"], "frequency": {"sessions_per_week": 2, "minutes": 30, "setting": "room"},
            "review_on": str(date.today() + timedelta(weeks=6))}


_GIVER = {"name": "Intruder Parent", "relationship": "mother"}
Request = Callable[[dict[str, str]], dict[str, Any]]

# Every command route: the request an intruder sends, aimed at A's data wherever the route allows.
COMMANDS: dict[tuple[str, str], Request] = {
    ("PUT", "/trust"): lambda ids: {"json": {"name": "Intruders' own trust"}},
    ("PUT", "/academies/{academy_id}"): lambda ids: {"json": {"name": "Renamed by an intruder"}},
    ("POST", "/academies/{academy_id}/roster-imports"): lambda ids: {
        "content": roster_csv([f"{upn()},Intruder,Pupil,03/04/2017,M,4,4B"]), "headers": {"Content-Type": "text/csv"}},
    ("POST", "/academies/{academy_id}/groups"): lambda ids: {"json": {"name": "Intruders", "pupil_ids": [ids["pupil_id"]]}},
    ("POST", "/observations"): lambda ids: {"json": {
        "pupil_id": ids["pupil_id"], "statement_id": "being.2", "level": "rarely", "observed_at": _now(),
        "framework_version": SAMPLE}},
    ("POST", "/observations/bulk"): lambda ids: {"json": {"observed_at": _now(), "framework_version": SAMPLE, "ratings": [
        {"pupil_id": ids["pupil_id"], "statement_id": "being.2", "level": "rarely"}]}},
    ("POST", "/observations/{observation_id}/corrections"): lambda ids: {"json": {"level": "rarely"}},
    ("POST", "/assessments"): lambda ids: {"json": {
        "pupil_id": ids["pupil_id"], "strands": ["being"], "framework_version": SAMPLE}},
    ("POST", "/assessments/{assessment_id}/complete"): lambda ids: {},
    ("POST", "/screenings/{screening_id}/complete"): lambda ids: {},
    ("POST", "/plans"): lambda ids: {"json": _plan(ids)},
    ("POST", "/plans/{plan_id}/issue"): lambda ids: {"json": {"practitioner_id": "intruder"}},
    ("POST", "/plans/{plan_id}/versions"): lambda ids: {"json": {**_plan(ids), "practitioner_id": "intruder"}},
    ("POST", "/plans/{plan_id}/review"): lambda ids: {},
    ("POST", "/plans/{plan_id}/close"): lambda ids: {},
    ("POST", "/plans/{plan_id}/sessions"): lambda ids: {"json": {
        "held_on": str(date.today()), "minutes": 30, "note": "written by an intruder"}},
    ("POST", "/pupils/{pupil_id}/consents"): lambda ids: {"json": {
        "purpose": "share_social_care", "decision": "granted", "given_by": _GIVER, "method": "paper", "decided_at": _now()}},
    ("POST", "/pupils/{pupil_id}/consents/{purpose}/withdrawal"): lambda ids: {"json": {
        "given_by": _GIVER, "method": "email", "withdrawn_at": _now()}},
    ("POST", "/pupils/{pupil_id}/lawful-bases"): lambda ids: {"json": {
        "agency_category": "social_care", "basis": "public_task", "reason": "an intruder's reason",
        "policy_reference": "none", "decided_at": _now(),
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat()}},
    ("POST", "/pupils/{pupil_id}/opt-out/retention"): lambda ids: {"json": {
        "retention_basis": "legal_claims", "explanation": "an intruder's reason"}},
    ("PUT", "/academies/{academy_id}/retention-policies/{data_category}"): lambda ids: {"json": {
        "counted_from": "leaving_date", "period": {"years": 1}}},
    ("PUT", "/pupils/{pupil_id}/family-contact"): lambda ids: {"json": {"email": "intruder@evil.example"}},
    ("DELETE", "/pupils/{pupil_id}/family-contact"): lambda ids: {},
    ("PUT", "/pupils/{pupil_id}/retention-clock"): lambda ids: {"json": {"last_activity_on": str(date.today())}},
    ("POST", "/retention/runs"): lambda ids: {},
    ("POST", "/audit/verification"): lambda ids: {},  # verifies the caller's own trust's chain only
    ("POST", "/pupils/{pupil_id}/erasure"): lambda ids: {"json": {"reason": "recorded_in_error"}},
    ("POST", "/sharing/agencies"): lambda ids: {"json": {
        "category": "camhs", "organisation": "Intruders' agency", "endpoint_url": ids["endpoint_url"]}},
    ("POST", "/sharing/agencies/{agency_id}/verification"): lambda ids: {},
    ("PUT", "/sharing/agencies/{agency_id}/endpoint"): lambda ids: {"json": {"endpoint_url": ids["endpoint_url"]}},
    ("POST", "/sharing/agencies/{agency_id}/secret-rotation"): lambda ids: {},
    ("POST", "/sharing/agencies/{agency_id}/deactivation"): lambda ids: {},
    ("POST", "/sharing/shares"): lambda ids: {"json": {
        "agency_id": ids["agency_id"], "pupil_id": ids["pupil_id"], "document_kind": "report",
        "document_id": ids["assessment_id"]}},
    ("POST", "/sharing/deliveries/{delivery_id}/replay"): lambda ids: {},
    ("POST", "/sharing/shares/{share_id}/notice/withholding"): lambda ids: {"json": {
        "reason_code": "risk_of_harm_to_child", "reason": "an intruder's reason"}},
}


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    path: str
    query: tuple[tuple[str, bool], ...]  # (name, required)

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def routes_of(world: World, service: str) -> list[Route]:
    """Every operation the service's OpenAPI documents."""
    document = world.platform.apps[service].openapi()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            query = tuple((p["name"], bool(p.get("required"))) for p in operation.get("parameters", []) if p["in"] == "query")
            found.append(Route(service, method.upper(), path, query))
    return found


def request_for(world: World, route: Route) -> dict[str, Any]:
    """The request, filled with A's ids: path, query filters, and a command's body."""
    ids = dict(world.a.ids)
    overrides = PATH_OVERRIDES.get(route.key, {})
    path = re.sub(r"\{(\w+)\}", lambda m: ids[overrides.get(m.group(1), m.group(1))], route.path)
    params = {name: ids[QUERY_IDS[name]] for name, _ in route.query if name in QUERY_IDS}
    params |= {name: QUERY_VALUES[name] for name, required in route.query if required and name in QUERY_VALUES}
    request: dict[str, Any] = {"method": route.method, "url": path, "params": params}
    if route.method != "GET":
        request |= COMMANDS[route.key](ids)
    return request


def _sent(request: dict[str, Any]) -> str:
    """Everything the caller sent: A's values in it are echoes (a problem's `instance`), not leaks."""
    return " ".join(str(request.get(part, "")) for part in ("url", "params", "json", "content"))


def leaks(response: httpx.Response, request: dict[str, Any], values: set[str]) -> list[str]:
    sent = _sent(request)
    return sorted(v for v in values if v not in sent and v in response.text)


async def call(world: World, route: Route, request: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    request = dict(request)
    extra = request.pop("headers", {})
    return await world.platform.clients[route.service].request(headers={**headers, **extra}, **request)


def check(route: Route, request: dict[str, Any], response: httpx.Response, values: set[str]) -> str | None:
    """What is wrong with an intruder's response, if anything."""
    where = f"{route.service} {route.method} {route.path} -> {response.status_code}"
    found = leaks(response, request, values)
    if found:
        return f"{where}: A's data in the body: {found}"
    if response.status_code >= 500:
        return f"{where}: {response.text[:300]}"
    if response.status_code == 422 and response.json().get("type") == VALIDATION_ERROR:
        return f"{where}: the matrix's request is not valid, so it never reached the handler: {response.text[:300]}"
    aimed_at_a = any(v in _sent(request) for v in values)
    if route.method != "GET" and aimed_at_a and response.status_code not in REFUSALS:
        return f"{where}: a command on A's data must be refused: {response.text[:300]}"
    if route.method == "GET" and aimed_at_a and response.status_code not in (200, 403, 404):
        return f"{where}: expected 403, 404 or an answer without A's data: {response.text[:300]}"
    return None


def test_every_command_route_has_a_request_and_every_exemption_exists(world: World) -> None:
    routes = [r for s in SERVICES for r in routes_of(world, s)]
    keys = {r.key for r in routes}
    missing = sorted(r.key for r in routes if r.method != "GET" and r.key not in EXEMPT and r.key not in COMMANDS)
    assert not missing, f"add an intruder's request to COMMANDS for: {missing}"
    stale = sorted(set(EXEMPT) - keys) + sorted(set(COMMANDS) - keys)
    assert not stale, f"these routes no longer exist: {stale}"
    assert len(routes) >= 90


@pytest.mark.parametrize("service", SERVICES)
async def test_no_route_gives_another_academy_or_trust_any_of_trust_a_data(world: World, service: str) -> None:
    a, platform = world.a, world.platform
    other_academy = platform.token(ACADEMY_ROLES, a.trust_id, [a.other_academy_id], "intruder-a2")
    trust_b = uuid.uuid4()
    # Every role, and A1's id among its academies: a token must not reach across trusts by naming them.
    other_trust = platform.token(ALL_ROLES, trust_b, [uuid.uuid4(), a.academy_id], "intruder-b")
    cases = [("academy A2 of trust A", other_academy, a.academy_values),
             ("trust B", other_trust, a.academy_values | a.trust_values)]
    routes = [r for r in routes_of(world, service) if r.key not in EXEMPT]
    engine = platform.apps[service].state.runtime.engine
    before = await fingerprint(engine, a.academy_id)
    problems, refused = [], 0
    for route in routes:
        request = request_for(world, route)
        for name, headers, values in cases:
            response = await call(world, route, request, headers)
            refused += response.status_code in (403, 404)
            problem = check(route, request, response, values)
            if problem:
                problems.append(f"[{name}] {problem}")
    assert not problems, "\n".join(problems)
    after = await fingerprint(engine, a.academy_id)
    changed = sorted(table for table in before if after.get(table) != before[table])
    assert not changed, f"an intruder's command changed trust A's rows in {changed}"
    assert refused >= len(routes)  # most answers are refusals; the rest carried no A data

    # The positive control: A's own staff get every GET, so the ids above were real.
    failures = []
    for route in routes:
        if route.method == "GET" and route.key not in NOT_2XX_FOR_A:
            response = await call(world, route, request_for(world, route), world.headers_a)
            if not response.is_success:
                failures.append(f"{route.method} {route.path} -> {response.status_code}: {response.text[:200]}")
    assert not failures, "\n".join(failures)
