"""Action plans: what a plan must hold for its kind, and which command fits which state.

draft → issued (a named practitioner) → reviewed (against the latest scores) → closed. Changing an
issued plan makes a new issued version; the old version stays as it was, marked superseded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from uuid import UUID

from services.planning.domain.errors import InvalidActivities, InvalidPlan, InvalidSession, InvalidTargets, WrongPlanState
from services.planning.domain.framework import PlanningFramework
from shared.events.planning import PlanKind

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
