"""A family opts out of processing by the online tool (issue 15, item 1), tried through the public
APIs of the four services, in process, on the real PostgreSQL and Kafka.

Once consent acknowledged the opt-out to the member of staff who recorded it, nothing about the
child is recorded: assessment refuses observations and assessments (403), a screening leaves the
child out and says so, planning refuses plans, reporting leaves the child out. What was recorded
in the window before assessment learnt it (held open here by a lock on the child's roster row,
so the window is certain, not a matter of luck) does not survive. What was held before is erased
when the grace period ends, unless a DPO recorded a lawful reason to keep it (in the audit).
Re-granting restarts processing. Another trust cannot opt a child out, nor keep their data.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from services.assessment.app import app as assessment_app
from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.consent.app import app as consent_app
from services.planning.app import app as planning_app
from services.reporting.app import ReportingServiceSettings
from services.reporting.app import app as reporting_app
from services.reporting.sharing import SharingSettings
from shared.auth import DevIssuer, Role
from tests.integration.assessment.helpers import upn
from tests.integration.kernel.helpers import eventually
from tests.integration.services.in_process import settings_for
from tests.unit.assessment.report import levels_at

SAMPLE = "flourish-sample-1"
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group,Leaving Date"
MARGIN_S = 0.5


class Clock:
    """Consent's clock: real time, moved forward by the test to reach the period's end."""

    def __init__(self) -> None:
        self.ahead = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@dataclass
class Platform:
    assessment: httpx.AsyncClient
    consent: httpx.AsyncClient
    planning: httpx.AsyncClient
    reporting: httpx.AsyncClient
    issuer: DevIssuer
    clock: Clock
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_(self, role: Role, trust_id: uuid.UUID | None = None) -> dict[str, str]:
        token = self.issuer.issue(f"{role.value}-1", [role], trust_id or self.trust_id, [self.academy_id])
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path, monkeypatch) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    # The purge of the window reaches this far before the acknowledgement (5 s by default).
    monkeypatch.setenv("FLOURISH_OPT_OUT_RACE_MARGIN_S", str(MARGIN_S))
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    clock = Clock()
    async with AsyncExitStack() as stack:
        apps: dict[str, FastAPI] = {}
        clients: dict[str, httpx.AsyncClient] = {}

        async def serve(name: str, app: FastAPI) -> httpx.AsyncClient:
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = app
            clients[name] = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=f"http://{name}", timeout=60))
            return clients[name]

        consent = await serve("consent", consent_app(ConsentServiceSettings(
            kernel=settings, consent=ConsentSettings(run_retention_scheduler=False, opt_out_grace_days=30)), clock=clock))
        assessment = await serve("assessment", assessment_app(settings, consent_http=consent))
        await serve("planning", planning_app(settings, assessment_http=assessment, consent_http=consent))
        await serve("reporting", reporting_app(ReportingServiceSettings(kernel=settings, sharing=SharingSettings()),
                                               assessment_http=assessment,
                                               consent_transport=httpx.ASGITransport(app=apps["consent"])))
        yield Platform(clients["assessment"], consent, clients["planning"], clients["reporting"], DevIssuer(settings),
                       clock)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def refused(response: httpx.Response) -> bool:
    """A 403 problem naming the reason."""
    return (response.status_code == 403 and response.headers["content-type"].startswith("application/problem+json")
            and response.json()["type"].endswith("online-processing-refused"))


def parent_says(body: dict[str, Any]) -> dict[str, Any]:
    return {"given_by": {"name": "Jane Example", "relationship": "mother"}, "method": "paper", **body}


def now() -> str:
    return datetime.now(UTC).isoformat()


async def enrol(p: Platform, count: int) -> list[uuid.UUID]:
    admin = p.as_(Role.trust_admin)
    ok(await p.assessment.put("/trust", json={"name": "Riverbend Learning Trust"}, headers=admin))
    assert (await p.assessment.put(f"/academies/{p.academy_id}", json={"name": "Oak Hill"}, headers=admin)).is_success
    lines = [f"{upn()},Surname{n},Forename{n},03/04/2017,F,4,4B," for n in range(count)]
    imported = ok(await p.assessment.post(
        f"/academies/{p.academy_id}/roster-imports", content=("\r\n".join([HEADER, *lines]) + "\r\n").encode(),
        headers={**p.as_(Role.senco), "Content-Type": "text/csv"}))
    pupils = [uuid.UUID(str(e["pupil_id"])) for e in sorted(imported["enrolled"], key=lambda e: e["row"])]
    for pupil in pupils:  # consent learns the roster from PupilEnrolled, on Kafka

        async def known(pupil: uuid.UUID = pupil) -> bool:
            return (await p.consent.get(f"/pupils/{pupil}/consents", headers=p.as_(Role.senco))).status_code == 200

        await eventually(known, timeout=90)
    return pupils


async def start(p: Platform, pupil: uuid.UUID) -> httpx.Response:
    return await p.assessment.post("/assessments", headers=p.as_(Role.senco), json={
        "pupil_id": str(pupil), "strands": ["being"], "framework_version": SAMPLE})


async def rate(p: Platform, pupil: uuid.UUID, assessment_id: str | None, plan: int = 1) -> httpx.Response:
    return await p.assessment.post("/observations/bulk", headers=p.as_(Role.senco), json={
        "observed_at": now(), **({} if assessment_id else {"framework_version": SAMPLE}), "ratings": [
            {"pupil_id": str(pupil), "statement_id": s, "level": level.value,
             **({"assessment_id": assessment_id} if assessment_id else {})}
            for s, level in levels_at(plan).items()]})


async def assess(p: Platform, pupil: uuid.UUID) -> str:
    """A completed assessment of the Being strand."""
    assessment_id = str(ok(await start(p, pupil), 201)["assessments"][0]["assessment_id"])
    ok(await rate(p, pupil, assessment_id), 201)
    ok(await p.assessment.post(f"/assessments/{assessment_id}/complete", headers=p.as_(Role.senco)))
    return assessment_id


async def plan_for(p: Platform, pupil: uuid.UUID) -> httpx.Response:
    """A practitioner drafts the plan the platform suggests (planning learns scores from Kafka)."""
    suggested = await suggestion(p, pupil)
    return await p.planning.post("/plans", headers=p.as_(Role.practitioner), json={
        "kind": "individual", "pupil_ids": [str(pupil)], "strand": suggested["strand"],
        "targets": [t["statement_id"] for t in suggested["targets"]],
        "activities": [a["activity"] for a in suggested["activities"]],
        "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
        "review_on": str(date.today() + timedelta(weeks=6))})


async def suggestion(p: Platform, pupil: uuid.UUID) -> Any:
    async def ready() -> Any:
        response = await p.planning.get(f"/pupils/{pupil}/suggestion", headers=p.as_(Role.practitioner))
        return response.json() if response.status_code == 200 else None

    return await eventually(ready, timeout=90)


async def opt_out(p: Platform, pupil: uuid.UUID) -> Any:
    """The SENCo records the family's refusal; consent's 201 is the acknowledgement."""
    return ok(await p.consent.post(f"/pupils/{pupil}/consents", headers=p.as_(Role.senco), json=parent_says(
        {"purpose": "online_processing", "decision": "refused", "decided_at": now()})), 201)


async def assessments_of(p: Platform, pupil: uuid.UUID) -> set[str]:
    page = ok(await p.assessment.get(f"/pupils/{pupil}/assessments", headers=p.as_(Role.senco)))
    return {str(item["assessment_id"]) for item in page["items"]}


async def observations_of(p: Platform, pupil: uuid.UUID) -> int:
    page = ok(await p.assessment.get(f"/pupils/{pupil}/observations", params={"limit": 200}, headers=p.as_(Role.senco)))
    return len(page["items"])


async def dashboard(p: Platform) -> Any:
    return ok(await p.reporting.get(f"/academies/{p.academy_id}/dashboard", headers=p.as_(Role.senco)))


ABOUT_THE_CHILD = {"ObservationRecorded", "AssessmentStarted", "AssessmentCompleted", "StrandScored", "PlanIssued",
                   "PlanReviewed", "PlanClosed", "SessionLogged"}


async def events_of(engine: Any, schema: str, pupil: uuid.UUID, since: datetime | None = None) -> list[str]:
    """The pupil's assessment and planning events in a service's store (recorded since `since`),
    by type (the roster's and the audit's facts of reads are not what an opt-out removes)."""
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            f"SELECT event_type FROM {schema}.events WHERE data->>'pupil_id' = :pupil"
            + (" AND recorded_at >= :since" if since else "")), {"pupil": str(pupil), **({"since": since} if since else {})})
        return [t for t in (r.event_type.split(".")[2] for r in rows) if t in ABOUT_THE_CHILD]


async def test_an_opt_out_stops_processing_in_every_service_and_what_was_held_goes_at_the_periods_end(
    platform: Platform, engine: Any,
) -> None:
    p = platform
    child, kept, other = await enrol(p, 3)

    # What is held before the opt-out: a completed assessment and a plan for each child.
    held = {pupil: await assess(p, pupil) for pupil in (child, kept, other)}
    plan = ok(await plan_for(p, child), 201)

    async def reported() -> bool:
        return (await dashboard(p))["assessed"] == 3

    await eventually(reported, timeout=90)
    assert ok(await p.reporting.get(f"/pupils/{child}/profile", headers=p.as_(Role.senco)))["working_at_strand"]
    await asyncio.sleep(MARGIN_S * 2)  # held data lies before the purge's margin

    # The window: assessment has not applied the opt-out yet (its consumer waits for this lock on
    # the child's roster row), while staff keep recording. Commands take a compatible lock.
    async with engine.connect() as blocker:
        await blocker.execute(text("SELECT pupil_id FROM assessment.pupils WHERE pupil_id = :p FOR KEY SHARE"),
                              {"p": child})
        acknowledged = datetime.now(UTC)
        decision = opt_out(p, child)
        refusal = await decision
        in_window = str(ok(await start(p, child), 201)["assessments"][0]["assessment_id"])
        ok(await rate(p, child, in_window), 201)
        ok(await rate(p, child, None, plan=2), 201)
        ok(await p.assessment.post(f"/assessments/{in_window}/complete", headers=p.as_(Role.senco)))
        await blocker.rollback()

    # Refused at once in every service, as soon as each has the event.
    async def assessment_refuses() -> bool:
        return refused(await rate(p, child, None)) and refused(await start(p, child))

    await eventually(assessment_refuses, timeout=60)
    problem = (await start(p, child)).json()
    assert problem["reason"] == "online_processing_refused" and problem["pupil_ids"] == [str(child)]
    assert refused(await p.assessment.post(f"/assessments/{held[child]}/complete", headers=p.as_(Role.senco))) or \
        (await p.assessment.post(f"/assessments/{held[child]}/complete", headers=p.as_(Role.senco))).status_code == 409

    # Nothing recorded in the window survives: not the assessment, its ratings, the loose ratings,
    # the scores, nor the events in assessment's store (so no rebuild brings them back).
    assert await assessments_of(p, child) == {held[child]}
    assert await observations_of(p, child) == len(levels_at(1))
    assert await events_of(engine, "assessment", child, since=acknowledged) == []
    assert ok(await p.assessment.get(f"/assessments/{held[child]}", headers=p.as_(Role.senco)))["completed_at"]

    # A screening of the class leaves the child out, and says so.
    classes = ok(await p.assessment.get(f"/academies/{p.academy_id}/classes", headers=p.as_(Role.senco)))["items"]
    screening = ok(await p.assessment.post("/assessments", headers=p.as_(Role.senco), json={
        "class_id": str(classes[0]["class_id"]), "strands": ["being"], "framework_version": SAMPLE}), 201)
    assert {str(a["pupil_id"]) for a in screening["assessments"]} == {str(kept), str(other)}
    assert screening["left_out"] == [{"pupil_id": str(child), "reason": "online_processing_refused"}]

    # Planning refuses new plans and suggestions; it dropped the window's scores.
    async def planning_refuses() -> bool:
        response = await p.planning.get(f"/pupils/{child}/suggestion", headers=p.as_(Role.practitioner))
        return refused(response)

    await eventually(planning_refuses, timeout=60)
    assert refused(await p.planning.post(f"/plans/{plan['plan_id']}/issue", json={"practitioner_id": "practitioner-1"},
                                         headers=p.as_(Role.practitioner)))
    async with engine.connect() as conn:
        scores = (await conn.execute(text("SELECT assessment_id FROM planning.strand_scores WHERE pupil_id = :p"),
                                     {"p": child})).scalars().all()
    assert {str(s) for s in scores} <= {held[child]}

    # Reporting leaves the child out of the dashboards, refuses the profile and the report.
    async def reporting_leaves_out() -> bool:
        return (await dashboard(p))["children"] == 2

    await eventually(reporting_leaves_out, timeout=60)
    assert refused(await p.reporting.get(f"/pupils/{child}/profile", headers=p.as_(Role.senco)))
    assert refused(await p.reporting.get(f"/pupils/{child}/intervention-report", headers=p.as_(Role.senco)))
    assert (await p.reporting.get(f"/pupils/{other}/profile", headers=p.as_(Role.senco))).status_code == 200

    # A correction of a held rating is refused too, and so is a plan drafted by hand.
    held_rating = ok(await p.assessment.get(f"/pupils/{child}/observations", params={"limit": 1},
                                            headers=p.as_(Role.senco)))["items"][0]["observation_id"]
    assert refused(await p.assessment.post(f"/observations/{held_rating}/corrections", json={"level": "secure"},
                                           headers=p.as_(Role.senco)))
    assert refused(await p.planning.post("/plans", headers=p.as_(Role.practitioner), json={
        "kind": "individual", "pupil_ids": [str(child)], "strand": "being", "targets": ["being.1"],
        "activities": ["Circle time"], "frequency": {"sessions_per_week": 1, "minutes": 30, "setting": "one_to_one"},
        "review_on": str(date.today() + timedelta(weeks=6))}))

    # The second family opts out while the screening is open: without the lock, how long until
    # assessment refuses (the window: relay, Kafka, consumer)?
    await asyncio.sleep(MARGIN_S * 2)  # the screening lies before the purge's margin
    await opt_out(p, kept)
    acknowledged = datetime.now(UTC)

    async def refuses_kept() -> bool:
        return refused(await start(p, kept))

    await eventually(refuses_kept, timeout=60, interval=0.02)
    print(f"opt-out acknowledged → assessment refuses: {(datetime.now(UTC) - acknowledged).total_seconds():.3f} s")
    # Completing the screening leaves the child who opted out since it began out.
    by_pupil = {str(a["pupil_id"]): str(a["assessment_id"]) for a in screening["assessments"]}
    ok(await rate(p, other, by_pupil[str(other)]), 201)
    completed = ok(await p.assessment.post(f"/screenings/{screening['screening_id']}/complete",
                                           headers=p.as_(Role.senco)))
    assert completed, completed
    assert ok(await p.assessment.get(f"/assessments/{by_pupil[str(other)]}", headers=p.as_(Role.senco)))["completed_at"]
    assert ok(await p.assessment.get(f"/assessments/{by_pupil[str(kept)]}", headers=p.as_(Role.senco)))[
        "completed_at"] is None

    # A DPO records, in time, a lawful reason to keep what was held on the second child.
    keep = {"retention_basis": "safeguarding", "explanation": "Open child-protection case: keep the record"}
    assert (await p.consent.post(f"/pupils/{kept}/opt-out/retention", json=keep,
                                 headers=p.as_(Role.senco))).status_code == 403  # the DPO only
    bad = await p.consent.post(f"/pupils/{kept}/opt-out/retention", json={**keep, "retention_basis": "whim"},
                               headers=p.as_(Role.dpo))
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    kept_body = ok(await p.consent.post(f"/pupils/{kept}/opt-out/retention", json=keep, headers=p.as_(Role.dpo)), 201)
    assert (await p.consent.post(f"/pupils/{kept}/opt-out/retention", json=keep,
                                 headers=p.as_(Role.dpo))).status_code == 409  # once per opt-out
    assert (await p.consent.post(f"/pupils/{other}/opt-out/retention", json=keep,
                                 headers=p.as_(Role.dpo))).status_code == 409  # no opt-out to keep for
    status = ok(await p.consent.get(f"/pupils/{child}/opt-out", headers=p.as_(Role.senco)))
    assert status["opted_out"] and status["opt_out"]["kept_by_dpo"] is False
    assert status["opt_out"]["held_data_erased_on"] == (date.today() + timedelta(days=30)).isoformat()

    # Another trust can neither opt the child out nor keep their data: 404, nothing changed.
    elsewhere = uuid.uuid4()
    before = ok(await p.consent.get(f"/pupils/{other}/consents/history", headers=p.as_(Role.senco)))
    assert (await p.consent.post(f"/pupils/{other}/consents", headers=p.as_(Role.senco, elsewhere), json=parent_says(
        {"purpose": "online_processing", "decision": "refused", "decided_at": now()}))).status_code == 404
    assert (await p.consent.post(f"/pupils/{child}/opt-out/retention", json=keep,
                                 headers=p.as_(Role.dpo, elsewhere))).status_code == 404
    assert ok(await p.consent.get(f"/pupils/{other}/consents/history", headers=p.as_(Role.senco))) == before
    assert ok(await p.consent.get(f"/pupils/{child}/opt-out", headers=p.as_(Role.senco)))["opt_out"]["kept_by_dpo"] is False

    # `opt_out` is the opt-out's own clock, not one a retention policy may count from.
    policy = await p.consent.put(f"/academies/{p.academy_id}/retention-policies/assessments", headers=p.as_(Role.dpo),
                                 json={"counted_from": "opt_out", "period": {"days": 1}})
    assert policy.status_code == 422 and policy.headers["content-type"].startswith("application/problem+json")

    # Before the period's end nothing held is erased.
    assert ok(await p.consent.post("/retention/runs", headers=p.as_(Role.dpo)))["expired"] == []

    # The period ends: the held data of the child goes, the kept child's stays.
    p.clock.ahead = timedelta(days=31)
    run = ok(await p.consent.post("/retention/runs", headers=p.as_(Role.dpo)))
    assert {(e["pupil_id"], e["data_category"]) for e in run["expired"]} == {
        (str(child), category) for category in ("assessments", "action_plans", "shared_reports")}
    assert ok(await p.consent.post("/retention/runs", headers=p.as_(Role.dpo)))["expired"] == []  # once
    late = await p.consent.post(f"/pupils/{child}/opt-out/retention", json=keep, headers=p.as_(Role.dpo))
    assert late.status_code == 409 and "period" in late.json()["detail"]  # too late to keep

    async def held_data_erased() -> bool:
        return not await assessments_of(p, child) and \
            (await p.planning.get(f"/plans/{plan['plan_id']}", headers=p.as_(Role.practitioner))).status_code == 404

    await eventually(held_data_erased, timeout=60)
    assert await observations_of(p, child) == 0
    assert await events_of(engine, "assessment", child) == []
    assert await events_of(engine, "planning", child) == []
    assert held[kept] in await assessments_of(p, kept)  # kept by the DPO
    assert await assessments_of(p, other) >= {held[other]}

    # The consent record of the opt-out stays, with the pupil's key: the record of the family's choice.
    receipt = ok(await p.consent.get(f"/consent-decisions/{refusal['decision_id']}/receipt", headers=p.as_(Role.dpo)))
    assert "Jane Example" in str(receipt)
    purposes = ok(await p.consent.get(f"/pupils/{child}/consents", headers=p.as_(Role.senco)))["purposes"]
    assert next(x for x in purposes if x["purpose"] == "online_processing")["status"] == "refused"

    # The audit ledger has the DPO's decision (no explanation in clear) and the expiries.
    async def audited() -> list[Any]:
        page = ok(await p.reporting.get("/audit/entries", params={"action": "opt_out_retention_kept"},
                                        headers=p.as_(Role.auditor)))
        return page["items"]

    [entry] = await eventually(audited, timeout=60)
    assert entry["pupil_id"] == str(kept) and entry["kind"] == "erasure"
    assert entry["details"]["retention_basis"] == "safeguarding"
    assert entry["consent_id"] == kept_body["consent_id"]
    assert "child-protection" not in str(entry)

    # Re-granting restarts processing (the DPO's reason on record changes nothing to that).
    for pupil in (child, kept):
        ok(await p.consent.post(f"/pupils/{pupil}/consents", headers=p.as_(Role.senco), json=parent_says(
            {"purpose": "online_processing", "decision": "granted", "decided_at": now()})), 201)

        async def accepted_again(pupil: uuid.UUID = pupil) -> bool:
            return (await start(p, pupil)).status_code == 201

        await eventually(accepted_again, timeout=60)
    assert ok(await p.consent.get(f"/pupils/{child}/opt-out", headers=p.as_(Role.senco)))["opted_out"] is False

    # A withdrawal of a grant is an opt-out too.
    ok(await p.consent.post(f"/pupils/{other}/consents", headers=p.as_(Role.senco), json=parent_says(
        {"purpose": "online_processing", "decision": "granted", "decided_at": now()})), 201)
    ok(await p.consent.post(f"/pupils/{other}/consents/online_processing/withdrawal", headers=p.as_(Role.senco),
                            json=parent_says({"withdrawn_at": now()})), 201)

    async def other_refused() -> bool:
        return refused(await start(p, other))

    await eventually(other_refused, timeout=60)
