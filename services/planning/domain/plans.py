"""Action plans: what a plan must hold for its kind, which command fits which state, and the
`Plan` aggregate that decides each command's events.

draft → issued (a named practitioner) → reviewed (against the latest scores) → closed. Changing an
issued plan makes a new issued version; the old version stays as it was, marked superseded.

A plan's state is its current row in the plans table, not a replay of its stream: erasing a pupil
removes their events from planning's store (a group plan's PlanIssued names every pupil, so all of
them go), and the stream can no longer say what the plan is, while the row keeps the other pupils'
part. The stream still numbers the plan's events: `Plan.version` is its version when the plan was
loaded, the version the handler expects when it appends what the plan decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from services.planning.domain.errors import InvalidActivities, InvalidPlan, InvalidSession, InvalidTargets, WrongPlanState
from services.planning.domain.framework import PlanningFramework
from shared.events.planning import PlanClosed, PlanIssued, PlanKind, PlanReviewed, SessionLogged

MAX_TARGETS = 4


class PlanStatus(StrEnum):
    DRAFT = "draft"
    ISSUED = "issued"
    REVIEWED = "reviewed"
    CLOSED = "closed"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class PlanContent:
    kind: PlanKind
    pupil_ids: list[UUID]
    class_id: UUID | None
    strand: str
    targets: list[str]
    activities: list[str]
    sessions_per_week: int
    session_minutes: int
    setting: str
    review_on: date


def check_content(content: PlanContent, framework: PlanningFramework) -> None:
    """Refuse a plan that does not fit its kind or its framework (nothing is stored then)."""
    kind = content.kind
    if kind in (PlanKind.INDIVIDUAL, PlanKind.HOME) and len(content.pupil_ids) != 1:
        raise InvalidPlan(f"an {kind.value} plan is for exactly one pupil")
    if kind is PlanKind.GROUP and len(content.pupil_ids) < 2:
        raise InvalidPlan("a group plan is for two pupils or more")
    if kind is PlanKind.CLASS and (content.class_id is None or content.pupil_ids):
        raise InvalidPlan("a class plan names its class (class_id) and no individual pupils")
    if len(set(content.pupil_ids)) != len(content.pupil_ids):
        raise InvalidPlan("a pupil is named twice")
    if content.strand not in framework.strands:
        raise InvalidPlan(f"strand {content.strand!r} is not in framework {framework.version}")
    if not 1 <= len(content.targets) <= MAX_TARGETS or len(set(content.targets)) != len(content.targets):
        raise InvalidPlan(f"a plan has 1 to {MAX_TARGETS} different learning targets")
    wrong = [t for t in content.targets
             if t not in framework.statements or framework.statements[t].strand != content.strand]
    if wrong:
        raise InvalidTargets(content.strand, wrong)
    if not content.activities or any(not a.strip() for a in content.activities):
        raise InvalidActivities("a plan has at least one activity, none of them blank")


def check_can_issue(status: str) -> None:
    if status != PlanStatus.DRAFT:
        raise WrongPlanState(f"only a draft can be issued; this plan is {status} (change it to make a new version)")


def check_can_revise(status: str) -> None:
    if status not in (PlanStatus.ISSUED, PlanStatus.REVIEWED):
        raise WrongPlanState(f"only an issued or reviewed plan gets a new version; this plan is {status}")


def check_can_review(status: str) -> None:
    if status == PlanStatus.DRAFT:
        raise WrongPlanState("a plan is reviewed after it is issued; this one is still a draft")
    if status != PlanStatus.ISSUED:
        raise WrongPlanState(f"only an issued plan can be reviewed; this plan is {status}")


def check_can_close(status: str) -> None:
    if status not in (PlanStatus.ISSUED, PlanStatus.REVIEWED):
        raise WrongPlanState(f"only an issued or reviewed plan can be closed; this plan is {status}")


def check_session(status: str, held_on: date, today: date, minutes: int, plan_pupils: list[UUID],
                  present: list[UUID]) -> None:
    if status == PlanStatus.CLOSED:
        raise WrongPlanState("the plan is closed: no more sessions can be logged against it")
    if status not in (PlanStatus.ISSUED, PlanStatus.REVIEWED):
        raise WrongPlanState(f"sessions are logged against an issued plan; this plan is {status}")
    if held_on > today:
        raise InvalidSession(f"a session cannot be logged for a future date ({held_on.isoformat()})")
    if not 1 <= minutes <= 600:
        raise InvalidSession("a session lasts 1 to 600 minutes")
    strangers = [p for p in present if p not in plan_pupils]
    if strangers:
        raise InvalidSession("pupils present must be pupils of the plan: " + ", ".join(map(str, strangers)))


@dataclass(frozen=True)
class Progress:
    percent_now: float | None
    since_previous_plan: float | None
    since_baseline: float | None


def progress(now: float | None, at_issue: float | None, baseline: float | None) -> Progress:
    """Change in the strand % since the plan was issued (the previous plan's scores) and since baseline."""
    def change(before: float | None) -> float | None:
        return round(now - before, 1) if now is not None and before is not None else None

    return Progress(now, change(at_issue), change(baseline))


def hours(minutes: int) -> float:
    return round(minutes / 60, 2)


def plan_stream(plan_id: UUID) -> str:
    return f"plan-{plan_id}"


@dataclass(frozen=True)
class PupilReview:
    """Where one pupil of a plan stands at review, from their latest scores on its strand."""

    pupil_id: UUID
    change: Progress
    need_percents_now: dict[str, float]
    assessment_id: UUID | None


@dataclass(frozen=True)
class SessionHeld:
    session_id: UUID
    held_on: date
    minutes: int
    present: list[UUID]
    activities_done: list[str]
    logged_by: str
    has_note: bool


@dataclass(frozen=True)
class Plan:
    """One action plan at one version: what it holds, where it stands, and its stream's version.

    Each command checks the plan's state and returns the events it decided; nothing here does I/O.
    """

    plan_id: UUID
    plan_version: int
    status: PlanStatus
    content: PlanContent
    version: int = 0

    @classmethod
    def draft(cls, plan_id: UUID, content: PlanContent, framework: PlanningFramework) -> Plan:
        """A new plan: checked against its kind and framework; a draft has no events yet."""
        check_content(content, framework)
        return cls(plan_id, 1, PlanStatus.DRAFT, content)

    def issue(self, practitioner_id: str, at: datetime) -> list[PlanIssued]:
        check_can_issue(self.status)
        return self._issued(self.content, self.plan_version, practitioner_id, at, supersedes=None)

    def revise(self, content: PlanContent, framework: PlanningFramework, practitioner_id: str,
               at: datetime) -> list[PlanIssued]:
        """A new issued version (plan_version + 1) that supersedes this one."""
        check_can_revise(self.status)
        mine = self.content
        if content.kind is not mine.kind or content.pupil_ids != mine.pupil_ids or content.class_id != mine.class_id:
            raise InvalidPlan("a new version keeps the plan's kind and who it is for; start a new plan otherwise")
        check_content(content, framework)
        return self._issued(content, self.plan_version + 1, practitioner_id, at, supersedes=self.plan_version)

    def review(self, reviews: list[PupilReview], reviewed_by: str, at: datetime) -> list[PlanReviewed]:
        """One PlanReviewed per pupil reviewed (one without a pupil for a class plan)."""
        check_can_review(self.status)
        common: dict[str, Any] = {"plan_id": self.plan_id, "plan_version": self.plan_version,
                                  "reviewed_by": reviewed_by, "reviewed_at": at}
        events = [PlanReviewed(
            pupil_id=r.pupil_id, strand_percent_now=r.change.percent_now,
            change_since_previous_plan=r.change.since_previous_plan, change_since_baseline=r.change.since_baseline,
            need_percents_now=r.need_percents_now, assessment_id=r.assessment_id, **common) for r in reviews]
        return events or [PlanReviewed(pupil_id=None, **common)]

    def close(self, closed_by: str, at: datetime) -> list[PlanClosed]:
        check_can_close(self.status)
        return [PlanClosed(plan_id=self.plan_id, plan_version=self.plan_version, pupil_id=p, closed_by=closed_by,
                           closed_at=at) for p in _pupils_of(self.content)]

    def log_session(self, session: SessionHeld, today: date) -> list[SessionLogged]:
        """One SessionLogged per pupil present (one without a pupil for a class plan)."""
        check_session(self.status, session.held_on, today, session.minutes, self.content.pupil_ids, session.present)
        common: dict[str, Any] = {
            "session_id": session.session_id, "plan_id": self.plan_id, "held_on": session.held_on,
            "minutes": session.minutes, "activities_done": session.activities_done, "logged_by": session.logged_by,
            "has_note": session.has_note}
        present: list[UUID | None] = list(session.present) or [None]
        return [SessionLogged(pupil_id=p, **common) for p in present]

    def _issued(self, content: PlanContent, version: int, practitioner_id: str, at: datetime,
                supersedes: int | None) -> list[PlanIssued]:
        common: dict[str, Any] = {
            "plan_id": self.plan_id, "plan_version": version, "kind": content.kind, "strand": content.strand,
            "target_statements": list(content.targets), "activities": list(content.activities),
            "frequency": f"{content.sessions_per_week} × {content.session_minutes} min a week, {content.setting}",
            "practitioner_id": practitioner_id, "review_on": content.review_on, "issued_at": at,
            "pupil_ids": list(content.pupil_ids), "class_id": content.class_id,
            "sessions_per_week": content.sessions_per_week, "session_minutes": content.session_minutes,
            "supersedes_version": supersedes}
        # One event per pupil keeps each pupil's events in order on Kafka (keyed by pupil).
        return [PlanIssued(pupil_id=p, **common) for p in _pupils_of(content)]


def _pupils_of(content: PlanContent) -> list[UUID | None]:
    """The pupils a plan's events are about, one event each; a class plan's one event is about none."""
    return list(content.pupil_ids) or [None]
