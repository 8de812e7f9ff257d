"""Issue 17, service identities: which service calls is part of its token, the data key answers
only the services that need keys, and internal routes refuse what came through the ingress.

The four services run in process on the real PostgreSQL and Kafka. The adversaries: a Flourish
service's own client asking for what it must not have (consent's client for a data key, the
assessment service's for the family's contact), a token naming no client or one nobody knows, and
anyone reaching an internal route through the public ingress host (whose controller always sets
X-Forwarded-Host and X-Real-IP). Each is refused as a problem, counted on
flourish_security_refusals_total{kind} and, when the token is valid, recorded as an AccessRefused
audit fact that reaches the ledger; nothing is released.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.reporting.sharing import SharingSettings
from shared.auth import DevIssuer, Role
from shared.internal import INGRESS_HEADERS, INTERNAL_ROUTES, internal_only
from shared.tenancy import across_trusts
from tests.integration.assessment.helpers import upn
from tests.integration.kernel.helpers import eventually

DELIVERY = SharingSettings(allowed_private_networks=["127.0.0.1/32"], max_attempts=1, poll_interval_s=0.05)
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group,Leaving Date"
INGRESS = {"X-Forwarded-Host": "flourish.trust.example", "X-Real-IP": "203.0.113.9"}


@dataclass
class Platform:
    clients: dict[str, httpx.AsyncClient]
    apps: dict[str, Any]
    issuer: DevIssuer
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_(self, role: Role, subject: str | None = None, client: str | None = None) -> dict[str, str]:
        academies = [self.academy_id] if role in (Role.senco, Role.practitioner) else []
        token = self.issuer.issue(subject or f"{role.value}-1", [role], self.trust_id, academies, client=client)
        return {"Authorization": f"Bearer {token}"}

    def service(self, client: str) -> dict[str, str]:
        return self.as_(Role.service, f"service:{client}", client=client)


def refusals(kind: str) -> float:
    return REGISTRY.get_sample_value("flourish_security_refusals_total", {"kind": kind}) or 0.0


async def refused_facts(engine: Any, service: str, trust_id: uuid.UUID) -> list[dict[str, Any]]:
    async with engine.begin() as conn, across_trusts(conn):
        rows = await conn.execute(text(f"SELECT data FROM {service}.events WHERE trust_id = :t "
                                       "AND event_type = 'flourish.audit.AccessRefused.v1' ORDER BY global_position"),
                                  {"t": trust_id})
        return [row.data for row in rows]


async def enrolled(p: Platform) -> uuid.UUID:
    """One pupil, enrolled through the roster import (the assessment service fetches their key)."""
    senco = p.as_(Role.senco)
    ok = await p.clients["assessment"].put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"},
                                           headers=p.as_(Role.trust_admin))
    assert ok.is_success, ok.text
    csv = f"{HEADER}\r\n{upn()},Quenterbury,Ximena,03/04/2017,F,4,4B,\r\n".encode()
    imported = await p.clients["assessment"].post(f"/academies/{p.academy_id}/roster-imports", content=csv,
                                                  headers={**senco, "Content-Type": "text/csv"})
    assert imported.status_code == 200, imported.text
    return uuid.UUID(imported.json()["enrolled"][0]["pupil_id"])


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    assert response.headers["content-type"] == "application/problem+json", response.headers
    return response.json()  # type: ignore[no-any-return]


async def test_the_data_key_answers_only_the_clients_that_need_keys(platform: Platform, engine: Any) -> None:
    p = platform
    consent = p.clients["consent"]
    pupil = await enrolled(p)

    # The services that seal and open pupils' data get the key.
    for client in ("reporting", "assessment", "planning"):
        key = await consent.get(f"/pupils/{pupil}/data-key", headers=p.service(client))
        assert key.status_code == 200 and key.json()["key"], (client, key.text)

    # Consent's own client needs no key from itself: refused, nothing released, recorded, counted.
    before = refusals("client_not_allowed")
    refused = await consent.get(f"/pupils/{pupil}/data-key", headers=p.service("consent"))
    assert "key" not in problem(refused, 403)
    # Nor for a pupil no key exists for yet: none is made.
    stranger = uuid.uuid4()
    problem(await consent.get(f"/pupils/{stranger}/data-key", headers=p.service("consent")), 403)
    async with engine.begin() as conn, across_trusts(conn):
        assert await conn.scalar(text("SELECT count(*) FROM consent.data_keys WHERE pupil_id = :p"),
                                 {"p": stranger}) == 0

    # The family's contact goes to the reporting service's notices alone: the assessment service's
    # client is refused even though it may have the key.
    problem(await consent.get(f"/pupils/{pupil}/family-contact", headers=p.service("assessment")), 403)
    contact = await consent.get(f"/pupils/{pupil}/family-contact", headers=p.service("reporting"))
    assert contact.status_code == 404, contact.text  # allowed: the family has given no contact
    assert refusals("client_not_allowed") - before == 3

    facts = await refused_facts(engine, "consent", p.trust_id)
    assert [(f["refusal"], f["actor"], f["client"], f["route"], f["method"], f["pupil_id"]) for f in facts] == [
        ("client_not_allowed", "service:consent", "consent", "/pupils/{pupil_id}/data-key", "get", str(pupil)),
        ("client_not_allowed", "service:consent", "consent", "/pupils/{pupil_id}/data-key", "get", str(stranger)),
        ("client_not_allowed", "service:assessment", "assessment", "/pupils/{pupil_id}/family-contact", "get",
         str(pupil)),
    ]
    # Only the releases are data-key reads; the refusals released nothing.
    async with engine.begin() as conn, across_trusts(conn):
        reads = (await conn.execute(text(
            "SELECT data FROM consent.events WHERE trust_id = :t AND event_type = 'flourish.audit.PersonalDataRead.v1'"),
            {"t": p.trust_id})).all()
    assert {r.data["actor"] for r in reads if r.data["data_categories"] == ["data_key"]
            and r.data["pupil_id"] == str(pupil)} == {"service:assessment", "service:planning", "service:reporting"}
    assert "service:consent" not in {r.data["actor"] for r in reads}

    # The refusal reaches the audit ledger, where a DPO asks for it.
    async def in_the_ledger() -> list[dict[str, Any]]:
        page = await p.clients["reporting"].get("/audit/entries", params={"action": "access_refused", "limit": 50},
                                                headers=p.as_(Role.auditor))
        assert page.status_code == 200, page.text
        entries = [e for e in page.json()["items"] if e.get("pupil_id") == str(pupil)]
        return entries if len(entries) == 2 else None

    entries = await eventually(in_the_ledger, timeout=90, interval=0.3)
    assert {(e["kind"], e["actor"], e["details"]["refusal"], e["details"]["client"], e["details"]["route"])
            for e in entries} == {
        ("access", "service:consent", "client_not_allowed", "consent", "/pupils/{pupil_id}/data-key"),
        ("access", "service:assessment", "client_not_allowed", "assessment", "/pupils/{pupil_id}/family-contact")}


async def test_a_service_token_without_a_known_client_is_refused(platform: Platform) -> None:
    p = platform
    pupil = await enrolled(p)
    before = refusals("unknown_service_client")
    for headers in (p.as_(Role.service, "service:reporting"),  # no client_id at all
                    p.as_(Role.service, "service:reporting", client="rogue")):  # a client nobody configured
        body = problem(await p.clients["consent"].get(f"/pupils/{pupil}/data-key", headers=headers), 401)
        assert "key" not in body
        problem(await p.clients["assessment"].get(f"/pupils/{pupil}/attributes", headers=headers), 401)
    assert refusals("unknown_service_client") - before == 4
    # Staff tokens need no client: people are not services.
    assert (await p.clients["assessment"].get(f"/pupils/{pupil}", headers=p.as_(Role.senco))).status_code == 200


async def test_every_internal_route_refuses_a_request_through_the_ingress(platform: Platform, engine: Any) -> None:
    p = platform
    pupil = await enrolled(p)
    query = {"pupil_id": str(pupil), "agency_category": "camhs", "data_kind": "report"}

    async def family_contact_set() -> bool:  # once consent knows the pupil (PupilEnrolled, on Kafka)
        response = await p.clients["consent"].put(f"/pupils/{pupil}/family-contact", json={"email": "home@example.org"},
                                                  headers=p.as_(Role.senco))
        return response.status_code == 200

    await eventually(family_contact_set, timeout=90, interval=0.3)
    token = {"consent": "reporting", "assessment": "reporting", "planning": "reporting", "reporting": "reporting"}
    dpo = p.as_(Role.dpo)
    before = refusals("internal_path_via_ingress")
    asked = 0
    for service, routes in sorted(INTERNAL_ROUTES.items()):
        for method, template in sorted(routes):
            path = template.replace("{pupil_id}", str(pupil))
            auth = dpo if path.endswith("/subject-access") else p.service(token[service])
            params = query if template == "/sharing-decisions" else None
            body = {"last_activity_on": datetime.now(UTC).date().isoformat()} if method == "PUT" else None
            # On the cluster network the caller is answered (or refused for its role, never 404).
            inside = await p.clients[service].request(method, path, headers=auth, params=params, json=body)
            assert inside.status_code != 404, (service, method, template, inside.text)
            # Through the ingress, each header alone is enough: 404, as if the route did not exist.
            for header in INGRESS:
                outside = await p.clients[service].request(method, path, headers={**auth, header: INGRESS[header]},
                                                           params=params, json=body)
                problem(outside, 404)
                asked += 1
            # Without a token too (nothing to record it under: counted only).
            problem(await p.clients[service].request(method, path, headers=INGRESS, params=params, json=body), 404)
            asked += 1
    assert refusals("internal_path_via_ingress") - before == asked

    # A public route through the ingress still works, internal calls included: the DPO's export
    # through the ingress gathers each service's (internal) part on the cluster network.
    export = await p.clients["consent"].get(f"/pupils/{pupil}/subject-access", headers={**dpo, **INGRESS})
    assert export.status_code == 200, export.text
    assert export.json()["complete"] is True, export.json()["missing_parts"]
    assert refusals("internal_path_via_ingress") - before == asked

    # Each refusal with a valid token is recorded by the service that refused it.
    recorded = {}
    for service in INTERNAL_ROUTES:
        for fact in await refused_facts(engine, service, p.trust_id):
            assert fact["refusal"] == "internal_path_via_ingress" and fact["pupil_id"] == str(pupil)
            recorded[(service, fact["method"].upper(), fact["route"])] = recorded.get(
                (service, fact["method"].upper(), fact["route"]), 0) + 1
    assert recorded == {(service, method, template): len(INGRESS)
                        for service, routes in INTERNAL_ROUTES.items() for method, template in routes}


def routes_of(routes: list[Any]) -> list[Any]:
    """Every route of an app, through the routers it includes (FastAPI keeps them nested)."""
    found = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        found.extend(routes_of(nested.routes) if nested is not None else [route])
    return found


async def test_the_internal_routes_are_exactly_those_marked_internal(stack_settings: Any, tmp_path: Any) -> None:
    """INTERNAL_ROUTES (what deploy/k8s keeps off the ingress) is the one list: every route marked
    INTERNAL is in it and nothing else is."""
    from services.assessment.app import app as assessment_app
    from services.consent.app import app as consent_app
    from services.planning.app import app as planning_app
    from services.reporting.app import app as reporting_app

    settings = stack_settings.model_copy(update={"state_dir": tmp_path})
    apps = {"assessment": assessment_app(settings), "consent": consent_app(settings),
            "planning": planning_app(settings), "reporting": reporting_app(settings)}
    marked: dict[str, set[tuple[str, str]]] = {}
    for name, app in apps.items():
        for route in routes_of(app.routes):
            dependant = getattr(route, "dependant", None)
            if dependant is not None and any(d.call is internal_only for d in dependant.dependencies):
                marked.setdefault(name, set()).update((m, route.path) for m in route.methods)
        paths = app.openapi()["paths"]  # the routes' paths as served (no router adds a prefix)
        assert all(method.lower() in paths[path] for method, path in marked.get(name, ())), name
    assert marked == {name: set(routes) for name, routes in INTERNAL_ROUTES.items()}
    assert INGRESS_HEADERS == ("x-forwarded-host", "x-real-ip")
