"""The four services running for real in-process on one topic prefix (real Kafka and PostgreSQL),
and trust A's data built through their APIs: enough that every path parameter of every route can
be filled with a real id of trust A's academy A1. Built once for the module: the matrix only reads
it (and checks that nobody else's commands changed it)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text

from flourish.kafka_acls import deprovision, provision
from flourish.local.postgres import ensure_service_logins, service_database_url
from services.assessment.app import app as assessment_service
from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.consent.app import app as consent_service
from services.planning.app import app as planning_service
from services.reporting.app import ReportingServiceSettings
from services.reporting.app import app as reporting_service
from shared.auth import TRUST_ROLES, DevIssuer, Role
from shared.settings import Settings
from tests.integration.assessment.helpers import SAMPLE, roster_csv, upn
from tests.integration.kernel.helpers import eventually
from tests.integration.planning.test_planning_flow import plan_body
from tests.integration.reporting.sharing.conftest import SCHEDULE, Receiver
from tests.unit.assessment.report import levels_at

ALL_ROLES = sorted(Role)
# Roles held within an academy: a token with these for academy A2 must reach nothing of A1's.
# (admin is the trust's tenancy administrator, not an academy's staff.)
ACADEMY_ROLES = sorted(set(Role) - TRUST_ROLES - {Role.admin})


@dataclass
class Platform:
    """The running services, by name, and the dev issuer their tokens come from."""

    clients: dict[str, httpx.AsyncClient]
    apps: dict[str, FastAPI]
    issuer: DevIssuer
    receiver: Receiver
    settings: Settings

    def token(self, roles: list[Role], trust_id: uuid.UUID, academies: list[uuid.UUID], subject: str) -> dict[str, str]:
        client = "reporting" if Role.service in roles else None  # a service token names its client
        return {"Authorization": f"Bearer {self.issuer.issue(subject, roles, trust_id, academies, client=client)}"}


@dataclass
class TrustA:
    """Trust A's ids and personal values, as the services gave them back."""

    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)
    other_academy_id: uuid.UUID = field(default_factory=uuid.uuid4)  # A2: same trust, another academy
    mark: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ids: dict[str, str] = field(default_factory=dict)  # path parameter name -> a real value of A1's
    trust_values: set[str] = field(default_factory=set)  # trust-level: any staff of trust A may see them
    academy_values: set[str] = field(default_factory=set)  # A1's pupils' data: nobody outside A1

    def keep(self, name: str, value: Any, *, trust_level: bool = False) -> str:
        """Remember a value of A's as the id for `name` (the first one kept) and, unless it is
        too short to search for (a sequence number), as a value no other tenant may see."""
        text = str(value)
        self.ids.setdefault(name, text)
        if len(text) >= 8:
            (self.trust_values if trust_level else self.academy_values).add(text)
        return text


@dataclass
class World:
    platform: Platform
    a: TrustA
    headers_a: dict[str, str]  # every role, trust A, academy A1: the positive control


def _keyed(headers: dict[str, str]) -> dict[str, str]:
    """With an Idempotency-Key: so that each service's idempotency keys hold some of A's rows."""
    return {**headers, "Idempotency-Key": uuid.uuid4().hex}


async def _ok(response: httpx.Response, *codes: int) -> Any:
    assert response.status_code in (codes or (200, 201)), f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else response.text


@pytest.fixture(scope="module")
async def platform(stack_settings, tmp_path_factory) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    state = tmp_path_factory.mktemp("isolation")
    prefix = f"test.{uuid.uuid4().hex[:10]}."
    settings = stack_settings.model_copy(update={
        "topic_prefix": prefix, "state_dir": state, "jwks_path": state / "dev-issuer" / "jwks.json",
        "consent_url": "http://consent", "relay_poll_interval_s": 0.1,
    })
    # Each service as it runs deployed: connected as its own role, which owns nothing, so the
    # tenant policy binds it as it binds any non-owner (docs/security.md "Database roles").
    ensure_service_logins(settings, ("assessment", "planning", "consent", "reporting"))
    await provision(settings, prefix)  # as Kafka's admin: the services may not make topics

    def as_role(service: str) -> Settings:
        return settings.model_copy(update={"database_url": service_database_url(settings, service)})

    async with AsyncExitStack() as stack:
        receiver = await _receiving(stack)
        consent_app = consent_service(ConsentServiceSettings(
            kernel=as_role("consent"), consent=ConsentSettings(run_retention_scheduler=False)))
        consent = await _serve(stack, consent_app, "consent")
        assessment_app = assessment_service(as_role("assessment"), consent_http=consent)
        assessment = await _serve(stack, assessment_app, "assessment")
        planning_app = planning_service(as_role("planning"), assessment_http=assessment, consent_http=consent)
        planning = await _serve(stack, planning_app, "planning")
        reporting_app = reporting_service(ReportingServiceSettings(kernel=as_role("reporting"), sharing=SCHEDULE),
                                          assessment_http=assessment, consent_transport=httpx.ASGITransport(app=consent_app))
        reporting = await _serve(stack, reporting_app, "reporting")
        yield Platform(
            clients={"assessment": assessment, "planning": planning, "consent": consent, "reporting": reporting},
            apps={"assessment": assessment_app, "planning": planning_app, "consent": consent_app, "reporting": reporting_app},
            issuer=DevIssuer(settings), receiver=receiver, settings=settings,
        )
    await deprovision(settings, prefix)


async def _receiving(stack: AsyncExitStack) -> Receiver:
    """A real webhook endpoint on 127.0.0.1 that accepts every delivery (no retries to wait for)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    receiver = Receiver(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    server = uvicorn.Server(uvicorn.Config(receiver, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    async def stop() -> None:
        server.should_exit = True
        await task

    await eventually(started)
    stack.push_async_callback(stop)
    return receiver


async def _serve(stack: AsyncExitStack, app: FastAPI, name: str) -> httpx.AsyncClient:
    await stack.enter_async_context(app.router.lifespan_context(app))
    return await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}", timeout=120))


@pytest.fixture(scope="module")
async def world(platform: Platform) -> World:
    a = TrustA()
    headers = platform.token(ALL_ROLES, a.trust_id, [a.academy_id], "staff-a1")
    await _roster(platform, a, headers)
    await _opt_out(platform, a, headers)
    await _assessments(platform, a, headers)
    await _plans(platform, a, headers)
    await _consent(platform, a, headers)
    await _sharing_and_audit(platform, a, headers)
    await _settled(platform, a)
    return World(platform, a, headers)


async def _settled(p: Platform, a: TrustA) -> None:
    """Wait until the background work A's activity started is done: the pupils' retention clocks
    delivered from the assessment service to the consent service."""
    engine = p.apps["assessment"].state.runtime.engine

    async def delivered() -> bool:
        async with engine.connect() as conn:
            return await conn.scalar(text("SELECT count(*) FROM assessment.retention_clock_outbox WHERE trust_id = :t"),
                                     {"t": a.trust_id}) == 0

    await eventually(delivered, timeout=60)


async def _roster(p: Platform, a: TrustA, headers: dict[str, str]) -> None:
    api = p.clients["assessment"]
    await _ok(await api.put("/trust", json={"name": f"Trust {a.mark}"}, headers=_keyed(headers)))
    a.trust_values.add(f"Trust {a.mark}")
    for academy, name in ((a.academy_id, f"Academy {a.mark}"), (a.other_academy_id, f"Other {a.mark}")):
        await _ok(await api.put(f"/academies/{academy}", json={"name": name}, headers=headers))
    a.keep("academy_id", a.academy_id, trust_level=True)
    a.ids["endpoint_url"] = p.receiver.url
    a.trust_values |= {str(a.trust_id), f"Academy {a.mark}"}
    pupils = [(upn(), f"Surname{a.mark}{n}", f"Forename{a.mark}{n}") for n in range(3)]
    rows = [f"{code},{surname},{forename},03/04/2017,{'MF'[n % 2]},4,Oak{a.mark}"
            for n, (code, surname, forename) in enumerate(pupils)]
    imported = await _ok(await api.post(f"/academies/{a.academy_id}/roster-imports", content=roster_csv(rows),
                                        headers={**headers, "Content-Type": "text/csv"}))
    for value in (v for pupil in pupils for v in pupil):
        a.academy_values.add(value)
    pupil_ids = [e["pupil_id"] for e in imported["enrolled"]]
    a.ids["pupil_ids"] = ",".join(pupil_ids)
    for pupil in pupil_ids:
        a.keep("pupil_id", pupil)
    classes = await _ok(await api.get(f"/academies/{a.academy_id}/classes", headers=headers))
    a.keep("class_id", classes["items"][0]["class_id"])
    group = await _ok(await api.post(f"/academies/{a.academy_id}/groups", headers=headers,
                                     json={"name": f"Nurture{a.mark}", "pupil_ids": pupil_ids[:2]}))
    a.keep("group_id", group["group_id"])
    a.academy_values.add(f"Nurture{a.mark}")


async def _opt_out(p: Platform, a: TrustA, headers: dict[str, str]) -> None:
    """The pupil erased later first opts out of the online tool (each service's processing_opt_outs)."""
    consent, opted_out = p.clients["consent"], a.ids["pupil_ids"].split(",")[2]

    async def known() -> bool:
        return (await consent.get(f"/pupils/{opted_out}/consents", headers=headers)).status_code == 200

    await eventually(known, timeout=60)
    await _ok(await consent.post(f"/pupils/{opted_out}/consents", headers=headers, json={
        "purpose": "online_processing", "decision": "refused", "given_by": {"name": f"Parent{a.mark}",
                                                                             "relationship": "father"},
        "method": "paper", "decided_at": datetime.now(UTC).isoformat()}))


async def _assessments(p: Platform, a: TrustA, headers: dict[str, str]) -> None:
    api, pupil = p.clients["assessment"], a.ids["pupil_id"]
    started = await _ok(await api.post("/assessments", headers=headers, json={
        "strands": ["being"], "framework_version": SAMPLE, "pupil_id": pupil}))
    assessment_id = a.keep("assessment_id", started["assessments"][0]["assessment_id"])
    now = datetime.now(UTC).isoformat()
    ratings = [{"pupil_id": pupil, "statement_id": s, "level": level.value, "assessment_id": assessment_id}
               for s, level in levels_at(1).items()]
    recorded = await _ok(await api.post("/observations/bulk", json={"observed_at": now, "ratings": ratings}, headers=headers))
    for observation in recorded["observation_ids"]:
        a.keep("observation_id", observation)
    note = f"Noted{a.mark} settled well"
    single = await _ok(await api.post("/observations", headers=headers, json={
        "pupil_id": a.ids["pupil_ids"].split(",")[1], "statement_id": "being.1", "level": "secure", "observed_at": now,
        "framework_version": SAMPLE, "note": note}))
    a.keep("observation_id", single["observation_ids"][0])
    a.academy_values.add(note)
    await _ok(await api.post(f"/assessments/{assessment_id}/complete", headers=headers))
    screening = await _ok(await api.post("/assessments", headers=headers, json={
        "strands": ["being"], "framework_version": SAMPLE, "class_id": a.ids["class_id"]}))
    a.keep("screening_id", screening["screening_id"])
    for started_one in screening["assessments"]:
        a.keep("assessment_id", started_one["assessment_id"])
    a.ids["version"] = SAMPLE


async def _plans(p: Platform, a: TrustA, headers: dict[str, str]) -> None:
    planning, pupil = p.clients["planning"], a.ids["pupil_id"]

    async def suggested() -> Any:
        response = await planning.get(f"/pupils/{pupil}/suggestion", headers=headers)
        return response.json() if response.status_code == 200 and response.json()["based_on"] else None

    suggestion = await eventually(suggested, timeout=60)
    plan = await _ok(await planning.post("/plans", json=plan_body(uuid.UUID(pupil), suggestion), headers=_keyed(headers)))
    plan_id = a.keep("plan_id", plan["plan_id"])
    await _ok(await planning.post(f"/plans/{plan_id}/issue", json={"practitioner_id": f"prac{a.mark}"}, headers=headers))
    note = f"Session{a.mark} calm and engaged"
    session = await _ok(await planning.post(f"/plans/{plan_id}/sessions", headers=headers, json={
        "held_on": str(date.today() - timedelta(days=1)), "minutes": 30, "activities_done": ["Sand tray play"],
        "note": note}))
    a.keep("session_id", session["session_id"])
    a.academy_values.add(note)


async def _consent(p: Platform, a: TrustA, headers: dict[str, str]) -> None:
    consent = p.clients["consent"]
    pupil, erased = a.ids["pupil_ids"].split(",")[0], a.ids["pupil_ids"].split(",")[2]

    async def known() -> bool:
        response = await consent.get(f"/pupils/{erased}/consents", headers=headers)
        return response.status_code == 200

    await eventually(known, timeout=60)
    parent = f"Parent{a.mark}"
    email = f"parent.{uuid.uuid4().hex[:10]}@family.example"  # the family's contact (family_contacts)
    decided = await _ok(await consent.post(f"/pupils/{pupil}/consents", headers=_keyed(headers), json={
        "purpose": "share_camhs", "decision": "granted",
        "given_by": {"name": parent, "relationship": "mother", "email": email},
        "method": "paper", "evidence_reference": f"Form{a.mark}", "decided_at": datetime.now(UTC).isoformat()}))
    a.keep("decision_id", decided["decision_id"])
    await _ok(await consent.post(f"/pupils/{pupil}/consents", headers=headers, json={
        "purpose": "interventions", "decision": "granted", "given_by": {"name": parent, "relationship": "mother"},
        "method": "paper", "decided_at": datetime.now(UTC).isoformat()}))
    a.academy_values |= {parent, f"Form{a.mark}", email}
    a.ids["purpose"] = "share_camhs"
    await _ok(await consent.put(f"/academies/{a.academy_id}/retention-policies/assessments", headers=headers,
                                json={"counted_from": "leaving_date", "period": {"years": 7}}))
    a.ids["data_category"] = "assessments"
    await _ok(await consent.post(f"/pupils/{erased}/opt-out/retention", headers=headers, json={
        "retention_basis": "legal_claims", "explanation": f"Claim{a.mark} pending"}))
    a.academy_values.add(f"Claim{a.mark} pending")
    await _ok(await consent.post(f"/pupils/{erased}/erasure", headers=headers, json={"reason": "recorded_in_error"}))
    a.ids["erased_pupil_id"] = erased


async def _sharing_and_audit(p: Platform, a: TrustA, headers: dict[str, str]) -> None:
    reporting, pupil = p.clients["reporting"], a.ids["pupil_id"]
    organisation = f"Camhs{a.mark}"
    agency = await _ok(await reporting.post("/sharing/agencies", headers=headers, json={
        "category": "camhs", "organisation": organisation, "endpoint_url": p.receiver.url}))
    a.keep("agency_id", agency["agency_id"], trust_level=True)
    a.trust_values.add(organisation)

    async def profiled() -> bool:
        response = await reporting.get(f"/pupils/{pupil}/profile", headers=headers)
        return response.status_code == 200 and bool(response.json().get("plans")) \
            and str(response.json().get("latest_assessment_id")) == a.ids["assessment_id"]

    await eventually(profiled, timeout=60)
    # The report as of A's assessment: the platform assembles it from the read models.
    shared = await _ok(await reporting.post("/sharing/shares", headers=_keyed(headers), json={
        "agency_id": agency["agency_id"], "pupil_id": pupil, "document_kind": "report",
        "document_id": a.ids["assessment_id"]}))
    a.keep("share_id", shared["share_id"])
    a.keep("delivery_id", shared["delivery_id"])

    async def delivered() -> bool:
        response = await reporting.get(f"/sharing/deliveries/{shared['delivery_id']}", headers=headers)
        return response.status_code == 200 and response.json()["status"] == "delivered"

    await eventually(delivered, timeout=60)

    async def audited() -> Any:
        response = await reporting.get("/audit/entries", headers=headers, params={"share_id": shared["share_id"]})
        return response.json()["items"] if response.status_code == 200 else None

    entries = await eventually(audited, timeout=60)
    a.keep("seq", entries[0]["seq"], trust_level=True)


# --- The catalog ---------------------------------------------------------------------------------

SCHEMAS = ("assessment", "planning", "consent", "reporting")
# The kernel's tables read across trusts by design: the event store's global position and append
# lock, the outbox relay, the inbox (docs/security.md). Idempotency keys are under the policy.
KERNEL = ("events", "outbox", "inbox")

_TENANT_TABLES = """
SELECT c.relnamespace::regnamespace::text AS schema, c.relname AS name,
       c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'trust_id' AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND c.relnamespace::regnamespace::text = ANY(:schemas)
ORDER BY 1, 2
"""


async def tenant_tables(engine: Any) -> list[Any]:
    """Every table of the services' schemas with a trust_id column, kernel tables excepted, from the
    catalog (so a new table is checked the day it is created)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(_TENANT_TABLES), {"schemas": list(SCHEMAS)})).all()
    return [r for r in rows if r.name not in KERNEL]


async def fingerprint(engine: Any, academy_id: uuid.UUID) -> dict[str, str]:
    """A digest of every row of the academy's, in every tenant table and event store that has an
    academy_id (system scope). Trust-level rows (agencies, say) are left out: staff of another
    academy of the same trust may rightly add to them; so is the audit ledger, which records A's
    own staff's reads on its own schedule."""
    async with engine.connect() as conn:
        tables = (await conn.execute(text(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.columns "
            "WHERE column_name = 'academy_id' AND table_schema = ANY(:schemas) AND table_name NOT LIKE '%\\_shadow' "
            "AND table_name NOT LIKE 'audit\\_%' "
            "AND table_name IN (SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')"),
            {"schemas": list(SCHEMAS)})).scalars().all()
        return {table: await conn.scalar(text(
            f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
            f"FROM {table} t WHERE academy_id = :a"), {"a": academy_id}) for table in sorted(tables)}
