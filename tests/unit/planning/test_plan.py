"""The Plan aggregate: each command checks the plan's state and returns the events it decided."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
import yaml

from services.planning.domain.errors import InvalidPlan, InvalidSession, WrongPlanState
from services.planning.domain.framework import PlanningFramework
from services.planning.domain.plans import Plan, PlanContent, PlanStatus, Progress, PupilReview, SessionHeld
from shared.events.planning import PlanClosed, PlanIssued, PlanKind, PlanReviewed, SessionLogged

SAMPLE = "services/assessment/frameworks/flourish-sample-1.yaml"
AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ANNA, BEN = uuid.uuid4(), uuid.uuid4()


@pytest.fixture(scope="module")
def framework() -> PlanningFramework:
    with open(SAMPLE) as file:
        return PlanningFramework.from_data(yaml.safe_load(file))


def content(**overrides: object) -> PlanContent:
    values: dict[str, object] = dict(
        kind=PlanKind.GROUP, pupil_ids=[ANNA, BEN], class_id=None, strand="being", targets=["being.21"],
        activities=["Free painting"], sessions_per_week=2, session_minutes=30, setting="small group",
        review_on=date(2026, 4, 1))
    values.update(overrides)
    return PlanContent(**values)  # type: ignore[arg-type]


def issued(framework: PlanningFramework, **overrides: object) -> Plan:
    plan = Plan.draft(uuid.uuid4(), content(**overrides), framework)
    return replace(plan, status=PlanStatus.ISSUED, version=len(plan.content.pupil_ids) or 1)


def test_a_draft_has_no_events_yet_and_is_checked_against_its_framework(framework):
    plan = Plan.draft(uuid.uuid4(), content(), framework)
    assert (plan.status, plan.plan_version, plan.version) == (PlanStatus.DRAFT, 1, 0)
    with pytest.raises(InvalidPlan):
        Plan.draft(uuid.uuid4(), content(strand="no-such-strand"), framework)


def test_issuing_a_group_plan_decides_one_plan_issued_per_pupil_naming_every_pupil(framework):
    plan = Plan.draft(uuid.uuid4(), content(), framework)
    events = plan.issue("practitioner-1", AT)
    assert [type(e) for e in events] == [PlanIssued, PlanIssued]
    assert [e.pupil_id for e in events] == [ANNA, BEN]
    first = events[0]
    assert first.plan_id == plan.plan_id and first.plan_version == 1 and first.supersedes_version is None
    assert first.pupil_ids == [ANNA, BEN] and first.practitioner_id == "practitioner-1" and first.issued_at == AT
    assert first.frequency == "2 × 30 min a week, small group"
    assert (first.sessions_per_week, first.session_minutes) == (2, 30)


def test_a_class_plan_decides_one_event_about_no_pupil(framework):
    class_id = uuid.uuid4()
    plan = Plan.draft(uuid.uuid4(), content(kind=PlanKind.CLASS, pupil_ids=[], class_id=class_id), framework)
    (event,) = plan.issue("practitioner-1", AT)
    assert event.pupil_id is None and event.class_id == class_id


def test_only_a_draft_is_issued(framework):
    with pytest.raises(WrongPlanState):
        issued(framework).issue("practitioner-1", AT)


def test_a_revision_is_the_next_version_and_supersedes_this_one(framework):
    plan = issued(framework)
    events = plan.revise(content(targets=["being.21", "being.22"]), framework, "practitioner-2", AT)
    assert {e.plan_version for e in events} == {2}
    assert {e.supersedes_version for e in events} == {1}
    assert events[0].target_statements == ["being.21", "being.22"]


def test_a_revision_keeps_who_the_plan_is_for(framework):
    with pytest.raises(InvalidPlan):
        issued(framework).revise(content(pupil_ids=[ANNA]), framework, "practitioner-1", AT)
    with pytest.raises(WrongPlanState):
        Plan.draft(uuid.uuid4(), content(), framework).revise(content(), framework, "practitioner-1", AT)


def test_a_review_decides_each_pupil_s_progress(framework):
    plan = issued(framework)
    assessment = uuid.uuid4()
    events = plan.review([PupilReview(ANNA, Progress(61.0, 4.5, 12.0), {"being.needs-met": 70.0}, assessment),
                          PupilReview(BEN, Progress(None, None, None), {}, None)], "senco-1", AT)
    assert [type(e) for e in events] == [PlanReviewed, PlanReviewed]
    anna = events[0]
    assert (anna.pupil_id, anna.strand_percent_now, anna.change_since_previous_plan, anna.change_since_baseline) == (
        ANNA, 61.0, 4.5, 12.0)
    assert anna.assessment_id == assessment and anna.reviewed_by == "senco-1"
    with pytest.raises(WrongPlanState):
        Plan.draft(uuid.uuid4(), content(), framework).review([], "senco-1", AT)


def test_a_review_of_no_pupil_still_records_one_review(framework):
    (event,) = issued(framework).review([], "senco-1", AT)
    assert event.pupil_id is None


def test_closing_decides_one_plan_closed_per_pupil_and_a_closed_plan_logs_no_session(framework):
    plan = issued(framework)
    events = plan.close("senco-1", AT)
    assert [type(e) for e in events] == [PlanClosed, PlanClosed] and [e.pupil_id for e in events] == [ANNA, BEN]
    closed = replace(plan, status=PlanStatus.CLOSED)
    with pytest.raises(WrongPlanState):
        closed.close("senco-1", AT)
    with pytest.raises(WrongPlanState):
        closed.log_session(session([ANNA]), date(2026, 3, 2))


def session(present: list[uuid.UUID], held_on: date = date(2026, 3, 2)) -> SessionHeld:
    return SessionHeld(uuid.uuid4(), held_on, 30, present, ["Free painting"], "practitioner-1", has_note=True)


def test_a_session_decides_one_event_per_pupil_present(framework):
    held = session([BEN])
    (event,) = issued(framework).log_session(held, date(2026, 3, 2))
    assert isinstance(event, SessionLogged)
    assert (event.session_id, event.pupil_id, event.minutes, event.has_note) == (held.session_id, BEN, 30, True)


def test_a_session_is_refused_for_a_stranger_or_a_future_date(framework):
    plan = issued(framework)
    with pytest.raises(InvalidSession):
        plan.log_session(session([uuid.uuid4()]), date(2026, 3, 2))
    with pytest.raises(InvalidSession):
        plan.log_session(session([ANNA], held_on=date(2026, 3, 3)), date(2026, 3, 2))
