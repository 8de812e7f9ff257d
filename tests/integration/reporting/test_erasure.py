"""Reporting obeys erasure and retention expiry (issue 15, item 2), tried as a family and a DPO would.

The four services run in process on the real PostgreSQL and Kafka (topics of the test's own), and
agencies' webhook endpoints are a real HTTP server on 127.0.0.1. A child is enrolled, assessed,
planned and shared with an agency; then the DPO erases the child through the consent service (or
the retention of the child's shared reports expires). Afterwards, through the public API and the
database: the profile and the report answer 410; no table of the reporting schema holds a row that
names the child (but the tombstone, and the audit facts, which hold no personal data in clear);
the other child is untouched; `flourish reporting rebuild`, run as an operator runs it, does not
bring the child back though Kafka still holds the child's events; and the agency that received the
child's data got a signed deletion notice carrying no personal data.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from flourish.local.services import platform_environment
from services.reporting.audit.tables import PRIVILEGES as LEDGER
from services.reporting.readmodels.erasure import PUPIL_DATA
from services.reporting.sharing import SharingSettings
from shared.auth import DevIssuer, Role
from shared.datakeys import SEALED_PREFIX
from tests.integration.assessment.helpers import upn
from tests.integration.kernel.helpers import eventually
from tests.integration.services.in_process import four_services, on_a_port, settings_for
from tests.unit.assessment.report import levels_at

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = "flourish-sample-1"
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group,Leaving Date"
TODAY = date.today()
QUICK = SharingSettings(allowed_private_networks=["127.0.0.1/32"], max_attempts=2, retry_schedule_s=[0, 0.05],
                        jitter=0.0, poll_interval_s=0.05)
# What reporting's own event store may keep naming the child: the facts the audit ledger records
# (who shared what with whom, on which basis; who read the record), pseudonymous ids and codes only.
AUDIT_FACTS = {"flourish.reporting.ReportShared.v1", "flourish.reporting.ShareBlocked.v1",
               "flourish.reporting.ShareDelivered.v1", "flourish.reporting.ShareDeliveryFailed.v1",
               "flourish.audit.PersonalDataRead.v1"}
NOT_SCANNED = {*LEDGER, "erasure_register", "events"}  # events: checked as audit facts (event_types_naming)


@dataclass
class Hooks:
    """Agencies' endpoints: /ok takes every delivery, /down refuses every one, /slow holds each
    request until `release` is set, then takes it. Every request is recorded."""

    received: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if b'"type":"endpoint.verification"' in body:  # every endpoint here is the agency's
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.received.append({"path": path, "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                              "body": body})
        if path.endswith("/slow"):
            await asyncio.wait_for(self.release.wait(), timeout=30)
        status = 500 if path.endswith("/down") else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def of(self, path: str, event_type: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.received if r["path"].endswith(path)
                and (event_type is None or orjson.loads(r["body"])["type"] == event_type)]


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    hooks = Hooks(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    server = uvicorn.Server(uvicorn.Config(hooks, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    await eventually(started)
    yield hooks
    hooks.release.set()
    server.should_exit = True
    await task


@dataclass
class Platform:
    clients: dict[str, httpx.AsyncClient]
    issuer: DevIssuer
    settings: Any
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def __getattr__(self, name: str) -> httpx.AsyncClient:
        return self.clients[name]

    def as_(self, role: Role, trust_id: uuid.UUID | None = None) -> dict[str, str]:
        token = self.issuer.issue(f"{role.value}-1", [role], trust_id or self.trust_id, [self.academy_id])
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    async with AsyncExitStack() as stack:
        services = await four_services(stack, settings, QUICK)
        # The operator's rebuild (a process of its own) asks consent for data keys over the network.
        consent_url = await on_a_port(stack, services.apps["consent"])
        yield Platform(services.clients, DevIssuer(settings), settings.model_copy(update={"consent_url": consent_url}))


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Child:
    pupil_id: uuid.UUID
    upn: str
    surname: str
    forename: str

    @property
    def personal(self) -> list[str]:
        return [self.upn, self.surname, self.forename]


async def enrol(p: Platform, count: int, left: date | None = None) -> list[Child]:
    admin = p.as_(Role.trust_admin)
    ok(await p.assessment.put("/trust", json={"name": "Riverbend Learning Trust"}, headers=admin))
    assert (await p.assessment.put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"}, headers=admin)).is_success
    children = [Child(uuid.UUID(int=0), upn(), f"Zed{uuid.uuid4().hex[:8]}", f"Quin{uuid.uuid4().hex[:8]}")
                for _ in range(count)]
    imported = ok(await p.assessment.post(f"/academies/{p.academy_id}/roster-imports", content=roster(children),
                                          headers={**p.as_(Role.senco), "Content-Type": "text/csv"}))
    by_row = {entry["row"]: uuid.UUID(str(entry["pupil_id"])) for entry in imported["enrolled"]}
    for row, child in zip(sorted(by_row), children, strict=True):
        child.pupil_id = by_row[row]
    for child in children:
        async def known_to_consent(child: Child = child) -> bool:
            response = await p.consent.get(f"/pupils/{child.pupil_id}/consents", headers=p.as_(Role.senco))
            return response.status_code == 200

        await eventually(known_to_consent, timeout=90)
    return children


def roster(children: list[Child], left: dict[str, date] | None = None) -> bytes:
    left = left or {}
    lines = [f"{c.upn},{c.surname},{c.forename},03/04/2017,F,4,4B,{f'{left[c.upn]:%d/%m/%Y}' if c.upn in left else ''}"
             for c in children]
    return ("\r\n".join([HEADER, *lines]) + "\r\n").encode()


async def assess(p: Platform, child: Child) -> str:
    started = ok(await p.assessment.post("/assessments", headers=p.as_(Role.senco), json={
        "pupil_id": str(child.pupil_id), "strands": ["being"], "framework_version": SAMPLE}), 201)
    assessment_id = str(started["assessments"][0]["assessment_id"])
    ok(await p.assessment.post("/observations/bulk", headers=p.as_(Role.senco), json={
        "observed_at": now(), "ratings": [{"pupil_id": str(child.pupil_id), "statement_id": s, "level": level.value,
                                           "assessment_id": assessment_id} for s, level in levels_at(1).items()]}), 201)
    ok(await p.assessment.post(f"/assessments/{assessment_id}/complete", headers=p.as_(Role.senco)))
    return assessment_id


async def plan(p: Platform, child: Child, assessment_id: str, *others: Child) -> str:
    """An individual plan for the child (a group plan with `others`), issued, a session logged, reviewed."""
    async def suggestion() -> Any:
        response = await p.planning.get(f"/pupils/{child.pupil_id}/suggestion", headers=p.as_(Role.practitioner))
        body = response.json() if response.status_code == 200 else {}
        return body if assessment_id in [str(a) for a in body.get("based_on", [])] else None

    suggested = await eventually(suggestion, timeout=90)
    draft = ok(await p.planning.post("/plans", headers=p.as_(Role.practitioner), json={
        "kind": "group" if others else "individual", "pupil_ids": [str(c.pupil_id) for c in (child, *others)],
        "strand": suggested["strand"],
        "targets": [t["statement_id"] for t in suggested["targets"]],
        "activities": [a["activity"] for a in suggested["activities"]],
        "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
        "review_on": str(TODAY + timedelta(weeks=6))}), 201)
    path = f"/plans/{draft['plan_id']}"
    ok(await p.planning.post(f"{path}/issue", json={"practitioner_id": "practitioner-1"}, headers=p.as_(Role.practitioner)))
    ok(await p.planning.post(f"{path}/sessions", headers=p.as_(Role.practitioner),
                             json={"held_on": str(TODAY), "minutes": 30, "staff_present": ["practitioner-1"]}), 201)
    ok(await p.planning.post(f"{path}/review", headers=p.as_(Role.practitioner)))
    return str(draft["plan_id"])


async def profile_with_plan(p: Platform, child: Child) -> Any:
    async def complete() -> Any:
        response = await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco))
        body = response.json() if response.status_code == 200 else {}
        plans = body.get("plans") or []
        return body if body.get("progress") and plans and plans[0]["sessions"] and plans[0]["reviews"] else None

    return await eventually(complete, timeout=90)


async def assessed_profile(p: Platform, child: Child) -> Any:
    async def scored() -> Any:
        response = await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco))
        body = response.json() if response.status_code == 200 else {}
        return body if body.get("progress") else None

    return await eventually(scored, timeout=90)


async def grant_sharing(p: Platform, child: Child) -> None:
    ok(await p.consent.post(f"/pupils/{child.pupil_id}/consents", headers=p.as_(Role.senco), json={
        "given_by": {"name": "Jane Example", "relationship": "mother"}, "method": "paper",
        "purpose": "share_camhs", "decision": "granted", "decided_at": now()}), 201)


async def agency(p: Platform, url: str) -> dict[str, Any]:
    return ok(await p.reporting.post("/sharing/agencies", headers=p.as_(Role.trust_admin), json={  # type: ignore[no-any-return]
        "category": "camhs", "organisation": "North CAMHS", "endpoint_url": url}), 201)


async def share(p: Platform, agency_id: str, child: Child) -> dict[str, Any]:
    # The intervention report as of the child's latest assessment: the platform assembles it (and
    # keeps it sealed with the child's key until delivered): it must not outlive the erasure.
    async def scored() -> Any:
        response = await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco))
        return response.json() if response.status_code == 200 and response.json().get("latest_assessment_id") else None

    profile = await eventually(scored, timeout=90)
    return ok(await p.reporting.post("/sharing/shares", headers=p.as_(Role.senco), json={  # type: ignore[no-any-return]
        "agency_id": agency_id, "pupil_id": str(child.pupil_id), "document_kind": "report",
        "document_id": str(profile["latest_assessment_id"])}), 201)


async def delivery_status(p: Platform, delivery_id: str) -> str | None:
    response = await p.reporting.get(f"/sharing/deliveries/{delivery_id}", headers=p.as_(Role.senco))
    return response.json().get("status") if response.status_code == 200 else None


async def finished(p: Platform, delivery_id: str, status: str) -> None:
    async def done() -> bool:
        return await delivery_status(p, delivery_id) == status

    await eventually(done, timeout=60)


async def rows_naming(engine: Any, values: list[str], skip: set[str] = NOT_SCANNED) -> dict[str, int]:
    """Every table of the reporting schema (but `skip`): how many rows mention any of `values`."""
    found: dict[str, int] = {}
    async with engine.connect() as conn:
        names = (await conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'reporting' ORDER BY tablename"))).scalars().all()
        for name in names:
            if name in skip:
                continue
            clauses = "(" + " OR ".join(f"t::text ILIKE :v{i}" for i in range(len(values))) + ")"
            if name == "rm_pupils":
                # An erased pupil keeps their roster entry (pupil, trust, academy: what the tombstone
                # holds) for the tenancy guard; a row holding anything more counts.
                clauses += f" AND num_nonnulls({', '.join(PUPIL_DATA)}) > 0"
            count = await conn.scalar(text(f'SELECT count(*) FROM reporting."{name}" t WHERE {clauses}'),
                                      {f"v{i}": f"%{v}%" for i, v in enumerate(values)})
            if count:
                found[name] = count
    return found


async def event_types_naming(engine: Any, value: str) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(text(
            "SELECT DISTINCT event_type FROM reporting.events WHERE data::text LIKE :v"), {"v": f"%{value}%"})).scalars())


async def rebuild_as_an_operator(settings: Any) -> str:
    """`flourish reporting rebuild`, in a process of its own, on the test's database and topics."""
    environment = {**os.environ, **platform_environment(settings), "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flourish.cli", "reporting", "rebuild", env=environment, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, err.decode()[-3000:]
    return out.decode()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()  # type: ignore[no-any-return]


async def test_an_erased_child_is_gone_from_every_copy_in_reporting_and_the_agency_is_told(
    platform: Platform, hooks: Hooks, engine: Any,
) -> None:
    p = platform
    child, other = await enrol(p, 2)
    assessed = {c.pupil_id: await assess(p, c) for c in (child, other)}
    await plan(p, child, assessed[child.pupil_id])
    group = await plan(p, child, assessed[child.pupil_id], other)
    before = await profile_with_plan(p, child)
    assert before["working_at_strand"]

    async def in_the_group() -> Any:
        body = await assessed_profile(p, other)
        plans = [found for found in body["plans"] if found["plan_id"] == group]
        return body if plans and plans[0]["sessions"] and plans[0]["reviews"] else None

    other_before = await eventually(in_the_group, timeout=90)
    assert len((await profile_with_plan(p, child))["plans"]) == 2

    # Shared with an agency that takes it, and with one whose endpoint is down (a dead letter,
    # which keeps the document for a replay).
    await grant_sharing(p, child)
    taking, down = await agency(p, f"{hooks.url}/ok"), await agency(p, f"{hooks.url}/down")
    delivered = await share(p, taking["agency_id"], child)
    failed = await share(p, down["agency_id"], child)
    await finished(p, delivered["delivery_id"], "delivered")
    await finished(p, failed["delivery_id"], "failed")
    # The failed delivery keeps its document (sealed with the child's key) until the erasure.
    async with engine.connect() as conn:
        sealed = (await conn.execute(text("SELECT document_sealed FROM reporting.sharing_shares WHERE share_id = :s"),
                                     {"s": uuid.UUID(failed["share_id"])})).scalar_one()
    assert sealed is not None and sealed.startswith(SEALED_PREFIX), "the failed delivery keeps the document"

    # The DPO of another trust cannot erase the child: 404, nothing changed.
    elsewhere = uuid.uuid4()
    problem(await p.consent.post(f"/pupils/{child.pupil_id}/erasure", json={"reason": "right_to_erasure"},
                                 headers=p.as_(Role.dpo, trust_id=elsewhere)), 404)
    assert (await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco))).status_code == 200

    erasure = ok(await p.consent.post(f"/pupils/{child.pupil_id}/erasure", json={"reason": "right_to_erasure"},
                                      headers=p.as_(Role.dpo)), 201)

    # The profile and the report: 410, problem+json, for good.
    async def gone() -> bool:
        response = await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco))
        return response.status_code == 410

    await eventually(gone, timeout=60)
    problem(await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco)), 410)
    problem(await p.reporting.get(f"/pupils/{child.pupil_id}/intervention-report", headers=p.as_(Role.dpo)), 410)
    # Another trust's staff learn nothing, not even that the child was erased.
    problem(await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco, trust_id=elsewhere)),
            404)

    # The agency that received the child's data is told to delete it: signed, no personal data.
    async def notice() -> Any:
        found = hooks.of("/ok", "share.deletion_requested")
        return found[0] if found else None

    request = await eventually(notice, timeout=60)
    told = Webhook(taking["signing_secret"]).verify(request["body"], request["headers"])
    assert told["data"]["pupil_id"] == str(child.pupil_id)
    assert told["data"]["share_ids"] == [delivered["share_id"]]
    assert told["data"]["reason"] == "pupil_erased" and "document" not in told["data"]
    assert not any(v in request["body"].decode() for v in child.personal)
    # The endpoint that was down never accepted the child's data: nothing to tell it, nothing resent.
    assert hooks.of("/down", "share.deletion_requested") == []
    assert len(hooks.of("/down")) == QUICK.max_attempts

    # Once the notice is delivered, no table of reporting names the child or holds their data (the
    # tombstone, and the audit facts, which hold pseudonymous ids and codes only, aside).
    async def notice_delivered() -> bool:
        async with engine.connect() as conn:
            return not await conn.scalar(text(
                "SELECT count(*) FROM reporting.sharing_deliveries WHERE payload::text LIKE :v"),
                {"v": f"%{child.pupil_id}%"})

    await eventually(notice_delivered, timeout=60)
    assert await rows_naming(engine, [str(child.pupil_id), *child.personal]) == {}
    assert await rows_naming(engine, child.personal, skip=set()) == {}, "no name or UPN anywhere, ledger included"
    assert await event_types_naming(engine, str(child.pupil_id)) <= AUDIT_FACTS
    async with engine.connect() as conn:
        tombstone = (await conn.execute(text("SELECT * FROM reporting.erasure_register WHERE pupil_id = :p"),
                                        {"p": child.pupil_id})).mappings().all()
    assert [(t["data_category"], str(t["erasure_id"])) for t in tombstone] == [("all", erasure["erasure_id"])]
    async with engine.connect() as conn:
        roster = (await conn.execute(text("SELECT * FROM reporting.rm_pupils WHERE pupil_id = :p"),
                                     {"p": child.pupil_id})).mappings().all()
    assert [{k: v for k, v in r.items() if v is not None} for r in roster] == [
        {"pupil_id": child.pupil_id, "trust_id": p.trust_id, "academy_id": p.academy_id}]

    # The other child is untouched, the group plan with them; the dashboard counts the other child only.
    assert (await assessed_profile(p, other)) == other_before
    async with engine.connect() as conn:
        members = (await conn.execute(text("SELECT pupil_id FROM reporting.rm_plan_pupils WHERE plan_id = :g"),
                                      {"g": uuid.UUID(group)})).scalars().all()
    assert members == [other.pupil_id]
    dashboard = ok(await p.reporting.get(f"/academies/{p.academy_id}/dashboard", headers=p.as_(Role.senco)))
    assert dashboard["children"] == 1 and dashboard["assessed"] == 1

    # A rebuild from Kafka, which still holds every event about the child, does not bring them back.
    said = await rebuild_as_an_operator(p.settings)
    assert "rebuilt the read models" in said
    problem(await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco)), 410)
    assert await rows_naming(engine, [str(child.pupil_id), *child.personal]) == {}
    async with engine.connect() as conn:  # the roster entry is back (from the tombstone), nothing more
        rebuilt = (await conn.execute(text("SELECT * FROM reporting.rm_pupils WHERE pupil_id = :p"),
                                      {"p": child.pupil_id})).mappings().all()
    assert [{k: v for k, v in r.items() if v is not None} for r in rebuilt] == [
        {"pupil_id": child.pupil_id, "trust_id": p.trust_id, "academy_id": p.academy_id}]
    assert (await assessed_profile(p, other)) == other_before


async def test_when_the_retention_of_shared_reports_expires_shares_go_and_agencies_are_told(
    platform: Platform, hooks: Hooks, engine: Any,
) -> None:
    p = platform
    (child,) = await enrol(p, 1)
    await assess(p, child)
    await grant_sharing(p, child)
    taking, down = await agency(p, f"{hooks.url}/ok"), await agency(p, f"{hooks.url}/down")
    delivered = await share(p, taking["agency_id"], child)
    failed = await share(p, down["agency_id"], child)
    await finished(p, delivered["delivery_id"], "delivered")
    await finished(p, failed["delivery_id"], "failed")

    # The child left 40 days ago; the academy keeps shared reports 30 days after leaving.
    changed = ok(await p.assessment.post(f"/academies/{p.academy_id}/roster-imports",
                                         content=roster([child], left={child.upn: TODAY - timedelta(days=40)}),
                                         headers={**p.as_(Role.senco), "Content-Type": "text/csv"}))
    assert changed["left"] == 1, changed
    ok(await p.consent.put(f"/academies/{p.academy_id}/retention-policies/shared_reports", headers=p.as_(Role.dpo),
                           json={"counted_from": "leaving_date", "period": {"days": 30}}))

    async def expired() -> Any:  # consent learns the leaving date from PupilLeft, on Kafka
        run = ok(await p.consent.post("/retention/runs", headers=p.as_(Role.dpo)))
        return [e for e in run["expired"] if e["pupil_id"] == str(child.pupil_id)]

    assert [e["data_category"] for e in await eventually(expired, timeout=90, interval=0.5)] == ["shared_reports"]

    async def notice() -> Any:
        found = hooks.of("/ok", "share.deletion_requested")
        return found[0] if found else None

    request = await eventually(notice, timeout=60)
    told = Webhook(taking["signing_secret"]).verify(request["body"], request["headers"])
    assert told["data"]["share_ids"] == [delivered["share_id"]] and told["data"]["reason"] == "retention_expired"
    assert not any(v in request["body"].decode() for v in child.personal)
    assert hooks.of("/down", "share.deletion_requested") == []

    # Every copy of the shares goes (the dead letter's document with it); the rest of what reporting
    # holds about the child stays until its own period ends.
    async def shares_gone() -> Any:
        left = await rows_naming(engine, [str(child.pupil_id), *child.personal])
        return left if not any(name.startswith("sharing_") for name in left) else None

    left = await eventually(shares_gone, timeout=60)
    assert set(left) <= {"rm_pupils", "rm_assessments", "rm_strand_scores", "rm_observations"}, left
    assert await rows_naming(engine, child.personal, skip=set()) == {}
    profile = ok(await p.reporting.get(f"/pupils/{child.pupil_id}/profile", headers=p.as_(Role.senco)))
    assert profile["progress"]
    async with engine.connect() as conn:
        categories = (await conn.execute(text("SELECT data_category FROM reporting.erasure_register WHERE pupil_id = :p"),
                                         {"p": child.pupil_id})).scalars().all()
    assert categories == ["shared_reports"]


async def test_an_erasure_while_deliveries_are_in_flight_stops_them_or_follows_them_with_a_notice(
    platform: Platform, hooks: Hooks, engine: Any,
) -> None:
    p = platform
    (child,) = await enrol(p, 1)
    await assess(p, child)
    await grant_sharing(p, child)
    slow, taking = await agency(p, f"{hooks.url}/slow"), await agency(p, f"{hooks.url}/ok")
    # The slow agency holds the first delivery open: the worker is sending it (row locked) while
    # the child is erased; the second share waits behind it, not yet sent.
    sending = await share(p, slow["agency_id"], child)

    async def in_flight() -> bool:
        return bool(hooks.of("/slow"))

    await eventually(in_flight, timeout=30)
    waiting = await share(p, taking["agency_id"], child)
    ok(await p.consent.post(f"/pupils/{child.pupil_id}/erasure", json={"reason": "right_to_erasure"},
                            headers=p.as_(Role.dpo)), 201)

    async def gone() -> bool:  # the erasure reached reporting's read models (the sharing part waits)
        async with engine.connect() as conn:
            return bool(await conn.scalar(text("SELECT count(*) FROM reporting.erasure_register WHERE pupil_id = :p"),
                                          {"p": child.pupil_id}))

    await asyncio.sleep(1.0)
    hooks.release.set()  # the slow agency now takes the share: it was sent before the erasure applied
    await eventually(gone, timeout=60)

    async def told() -> Any:
        found = hooks.of("/slow", "share.deletion_requested")
        return found[0] if found else None

    request = await eventually(told, timeout=60)
    notice = Webhook(slow["signing_secret"]).verify(request["body"], request["headers"])
    assert notice["data"]["share_ids"] == [sending["share_id"]] and notice["data"]["reason"] == "pupil_erased"
    # The waiting share was stopped, never sent — or, had the worker sent it first, followed by a
    # notice naming it. Either way no agency keeps the child's data without being told.
    sent = hooks.of("/ok", "share.created")
    notices = hooks.of("/ok", "share.deletion_requested")
    if sent:
        assert [orjson.loads(n["body"])["data"]["share_ids"] for n in notices] == [[waiting["share_id"]]]
    else:
        assert notices == []

    async def nothing_left() -> Any:
        left = await rows_naming(engine, [str(child.pupil_id), *child.personal])
        return left == {}

    await eventually(nothing_left, timeout=60)
    assert (await p.reporting.get(f"/sharing/deliveries/{waiting['delivery_id']}", headers=p.as_(Role.senco))
            ).status_code == 404
