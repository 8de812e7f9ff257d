"""The issue's done-when on the real stack: an assessment completes in the assessment service, a
suggestion appears in planning (over Kafka), a practitioner issues it (PlanIssued on Kafka), logs
sessions and reviews it with the next assessment's scores; and the refusals that change nothing."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy import text

from shared.auth import Role
from shared.events.consent import ConsentMethod, ConsentWithdrawn, DataCategory, ErasureReason, PupilErased, Purpose
from shared.events.envelope import topic_for
from shared.messaging.clients import ADMIN, kafka_options
from tests.integration.assessment.helpers import SAMPLE, class_of, now
from tests.integration.consent.conftest import of_pupils, read_until, types_of
from tests.integration.kernel.helpers import eventually
from tests.unit.assessment.report import levels_at


async def assess(p, pupil, plan: int) -> str:
    api, tenant = p.assessment, p.tenant
    started = await api.post("/assessments", headers=tenant.headers(),
                             json={"strands": ["being"], "framework_version": SAMPLE, "pupil_id": str(pupil)})
    assert started.status_code == 201, started.text
    assessment_id = started.json()["assessments"][0]["assessment_id"]
    ratings = [{"pupil_id": str(pupil), "statement_id": s, "level": level.value, "assessment_id": assessment_id}
               for s, level in levels_at(plan).items()]
    rated = await api.post("/observations/bulk", json={"observed_at": now(), "ratings": ratings}, headers=tenant.headers())
    assert rated.status_code == 201, rated.text
    completed = await api.post(f"/assessments/{assessment_id}/complete", headers=tenant.headers())
    assert completed.status_code == 200, completed.text
    return assessment_id


def plan_body(pupil, suggestion, **overrides):
    body = {"kind": "individual", "pupil_ids": [str(pupil)], "strand": suggestion["strand"],
            "targets": [t["statement_id"] for t in suggestion["targets"]],
            "activities": [a["activity"] for a in suggestion["activities"]],
            "frequency": {"sessions_per_week": suggestion["frequency"]["sessions_per_week"],
                          "minutes": suggestion["frequency"]["minutes"], "setting": suggestion["frequency"]["setting"]},
            "review_on": str(date.today() + timedelta(weeks=6))}
    body.update(overrides)
    return body


async def test_an_assessment_becomes_a_suggestion_a_practitioner_issues_logs_sessions_and_reviews(planning):
    p = planning
    _, (pupil, *_) = await class_of(p.assessment, p.tenant, 1, born=date(2016, 5, 1))
    first = await assess(p, pupil, 1)

    suggestion = await p.suggestion_of(pupil, first)
    assert suggestion["strand"] == "being" and suggestion["issued"] is False
    assert suggestion["focus_needs"] == ["being.special", "being.needs-met"]
    assert first in suggestion["why"][0] and all(t["why"] for t in suggestion["targets"])
    assert suggestion["frequency"]["text"] == "2 × 30 min a week, one-to-one"

    staff = p.staff()
    draft = await p.client.post("/plans", json=plan_body(pupil, suggestion), headers={**staff, "Idempotency-Key": "d1"})
    assert draft.status_code == 201, draft.text
    plan_id = draft.json()["plan_id"]
    again = await p.client.post("/plans", json=plan_body(pupil, suggestion), headers={**staff, "Idempotency-Key": "d1"})
    assert again.json()["plan_id"] == plan_id  # retried safely: one draft

    no_one = await p.client.post(f"/plans/{plan_id}/issue", json={"practitioner_id": "  "}, headers=staff)
    assert no_one.status_code == 422
    early_review = await p.client.post(f"/plans/{plan_id}/review", headers=staff)
    assert early_review.status_code == 409 and "draft" in early_review.json()["detail"]
    assert (await p.client.get(f"/plans/{plan_id}", headers=staff)).json()["status"] == "draft"
    issued = await p.client.post(f"/plans/{plan_id}/issue", json={"practitioner_id": "practitioner-7"}, headers=staff)
    assert issued.status_code == 200, issued.text
    assert issued.json()["status"] == "issued" and issued.json()["percents_at_issue"] == {str(pupil): 36.3}

    records = await read_until(kafka_options(p.app.state.runtime.settings, ADMIN), topic_for("planning", p.prefix),
                               lambda rs: "flourish.planning.PlanIssued.v1" in types_of(of_pupils(rs, pupil)))
    assert types_of(of_pupils(records, pupil)) == ["flourish.planning.PlanIssued.v1"]

    today = date.today()
    for n in range(29):
        logged = await p.client.post(f"/plans/{plan_id}/sessions", headers=staff, json={
            "held_on": str(today - timedelta(days=29 - n)), "minutes": 30, "staff_present": ["practitioner-7"],
            "activities_done": ["Sand tray play side by side"], "note": "Settled quickly today" if n == 0 else None})
        assert logged.status_code == 201, logged.text
    totals = (await p.client.get(f"/pupils/{pupil}/session-totals", headers=staff)).json()
    assert (totals["sessions"], totals["hours"]) == (29, 14.5)
    future = await p.client.post(f"/plans/{plan_id}/sessions", headers=staff,
                                 json={"held_on": str(today + timedelta(days=1)), "minutes": 30})
    assert future.status_code == 422 and "future" in future.json()["detail"]
    assert (await p.client.get(f"/pupils/{pupil}/session-totals", headers=staff)).json()["sessions"] == 29

    second = await assess(p, pupil, 2)
    await p.suggestion_of(pupil, second)
    reviewed = await p.client.post(f"/plans/{plan_id}/review", headers=staff)
    assert reviewed.status_code == 200, reviewed.text
    (outcome,) = reviewed.json()["review"]["pupils"]
    assert (outcome["strand_percent_now"], outcome["change_since_previous_plan"],
            outcome["change_since_baseline"]) == (44.4, 8.1, 8.1)
    closed = await p.client.post(f"/plans/{plan_id}/close", headers=staff)
    assert closed.json()["status"] == "closed"
    late = await p.client.post(f"/plans/{plan_id}/sessions", headers=staff, json={"held_on": str(today), "minutes": 30})
    assert late.status_code == 409 and "closed" in late.json()["detail"]
    assert (await p.client.get(f"/plans/{plan_id}/session-totals", headers=staff)).json()["sessions"] == 29

    # The session note is kept here, never in an event.
    events = await _planning_events(p)
    assert "Settled quickly" not in str(events) and {e[0] for e in events} >= {
        "flourish.planning.PlanIssued.v1", "flourish.planning.SessionLogged.v1", "flourish.planning.PlanReviewed.v1",
        "flourish.planning.PlanClosed.v1"}


async def _planning_events(p):
    async with p.app.state.runtime.engine.connect() as conn:
        rows = await conn.execute(text("SELECT event_type, data FROM planning.events WHERE trust_id = :t"),
                                  {"t": p.tenant.trust_id})
        return [(r.event_type, r.data) for r in rows]


async def test_changing_an_issued_plan_makes_a_new_version_and_the_old_one_stays(planning):
    p = planning
    _, (pupil, *_) = await class_of(p.assessment, p.tenant, 1, born=date(2016, 5, 1))
    suggestion = await p.suggestion_of(pupil, await assess(p, pupil, 1))
    staff = p.staff()
    plan_id = (await p.client.post("/plans", json=plan_body(pupil, suggestion), headers=staff)).json()["plan_id"]
    await p.client.post(f"/plans/{plan_id}/issue", json={"practitioner_id": "practitioner-7"}, headers=staff)
    changed = await p.client.post(f"/plans/{plan_id}/versions", headers=staff, json={
        **plan_body(pupil, suggestion, targets=["being.21"]), "practitioner_id": "practitioner-7"})
    assert changed.status_code == 201, changed.text
    plan = (await p.client.get(f"/plans/{plan_id}", headers=staff)).json()
    assert plan["version"] == 2 and plan["targets"] == ["being.21"]
    assert [(v["version"], v["status"]) for v in plan["versions"]] == [(1, "superseded"), (2, "issued")]
    assert plan["versions"][0]["targets"] == [t["statement_id"] for t in suggestion["targets"]]


async def test_bad_plans_are_refused_and_nothing_changes(planning):
    p = planning
    _, (pupil, *_) = await class_of(p.assessment, p.tenant, 1, born=date(2016, 5, 1))
    suggestion = await p.suggestion_of(pupil, await assess(p, pupil, 1))
    staff = p.staff()
    wrong = await p.client.post("/plans", headers=staff, json=plan_body(pupil, suggestion, targets=["being.21", "doing.1"]))
    assert wrong.status_code == 422 and wrong.json()["not_statements_of_strand"] == ["doing.1"]
    elsewhere = await p.client.post("/plans", json=plan_body(pupil, suggestion),
                                    headers=p.staff(academies=[uuid.uuid4()]))
    assert elsewhere.status_code == 403
    other_trust = await p.client.get(f"/pupils/{pupil}/suggestion",
                                     headers=p.tenant.headers(Role.practitioner, trust_id=uuid.uuid4()))
    assert other_trust.status_code == 404  # row-level security: another trust's pupil is no pupil at all
    unauthenticated = await p.client.get(f"/pupils/{pupil}/suggestion")
    assert unauthenticated.status_code == 401
    listed = (await p.client.get("/plans", params={"pupil_id": str(pupil)}, headers=staff)).json()
    assert listed["items"] == []


async def test_withdrawn_participation_stops_new_plans_and_erasure_removes_the_pupil_for_good(planning):
    p = planning
    _, (pupil, other) = await class_of(p.assessment, p.tenant, 2, born=date(2016, 5, 1))
    first = await assess(p, pupil, 1)
    suggestion = await p.suggestion_of(pupil, first)
    await p.suggestion_of(other, await assess(p, other, 2))
    staff = p.staff()
    plan_id = (await p.client.post("/plans", json=plan_body(pupil, suggestion), headers=staff)).json()["plan_id"]
    await p.client.post(f"/plans/{plan_id}/issue", json={"practitioner_id": "practitioner-7"}, headers=staff)
    await p.client.post(f"/plans/{plan_id}/sessions", headers=staff,
                        json={"held_on": str(date.today()), "minutes": 30, "note": "A note about the child"})

    await p.publish(p.consent_event(ConsentWithdrawn(
        consent_id=uuid.uuid4(), withdrawal_id=uuid.uuid4(), pupil_id=pupil, purpose=Purpose.INTERVENTIONS,
        record_version=2, method=ConsentMethod.EMAIL, given_by="fl1.sealed", recorded_by="senco-1",
        withdrawn_at=now())))

    async def refused() -> bool:
        response = await p.client.post("/plans", json=plan_body(pupil, suggestion), headers=staff)
        return response.status_code == 403 and response.json()["type"].endswith("participation-withdrawn")

    await eventually(refused)  # (drafts made before the withdrawal arrived stay, as drafts do)
    plans_before = (await p.client.get("/plans", params={"pupil_id": str(pupil)}, headers=staff)).json()["items"]
    assert await refused()
    session = await p.client.post(f"/plans/{plan_id}/sessions", headers=staff, json={"held_on": str(date.today()), "minutes": 30})
    assert session.status_code == 403 and "withdrawn" in session.json()["detail"]
    assert (await p.client.get("/plans", params={"pupil_id": str(pupil)}, headers=staff)).json()["items"] == plans_before
    assert (await p.client.get(f"/plans/{plan_id}/session-totals", headers=staff)).json()["sessions"] == 1
    assert (await p.client.post("/plans", json=plan_body(other, suggestion), headers=staff)).status_code == 201

    await p.publish(p.consent_event(PupilErased(
        pupil_id=pupil, erasure_id=uuid.uuid4(), data_category=DataCategory.ALL, reason=ErasureReason.RIGHT_TO_ERASURE,
        requested_by="dpo-1", key_destroyed=True, erased_at=now())))

    async def gone() -> bool:
        return (await p.client.get(f"/pupils/{pupil}/suggestion", headers=staff)).status_code == 410

    await eventually(gone)
    async with p.app.state.runtime.engine.connect() as conn:
        for table in ("strand_scores", "participation", "pupils"):
            assert await conn.scalar(text(f"SELECT count(*) FROM planning.{table} WHERE pupil_id = :p"), {"p": pupil}) == 0
        assert await conn.scalar(text("SELECT count(*) FROM planning.plans WHERE :p = ANY(pupil_ids)"), {"p": pupil}) == 0
        assert await conn.scalar(text("SELECT count(*) FROM planning.sessions WHERE :p = ANY(pupil_ids)"), {"p": pupil}) == 0
        assert await conn.scalar(text("SELECT count(*) FROM planning.session_notes WHERE trust_id = :t"),
                                 {"t": p.tenant.trust_id}) == 0
        assert await conn.scalar(text("SELECT count(*) FROM planning.events WHERE data->>'pupil_id' = :p"),
                                 {"p": str(pupil)}) == 0
    assert (await p.client.get(f"/plans/{plan_id}", headers=staff)).status_code == 404
    # A later or replayed score for the pupil never brings them back; the other pupil is untouched.
    await assess(p, pupil, 2)
    await p.suggestion_of(other)
    marker = await assess(p, other, 3)
    await p.suggestion_of(other, marker)
    assert (await p.client.get(f"/pupils/{pupil}/suggestion", headers=staff)).status_code == 410
