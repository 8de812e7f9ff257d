"""Events the planning service publishes: action plans, their reviews and the session log.

Each event about a pupil seals its `personal` fields (a plan's strand, targets and activities, a
review's scores, a session's activities) with that pupil's data key (shared.events.sealing); a
group plan is one event per child, each under that child's key. A class plan (no pupil) is about
a class and is not sealed."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from pydantic import Field

from shared.events.registry import Event, register

CONTEXT = "planning"


class PlanKind(StrEnum):
    INDIVIDUAL = "individual"
    GROUP = "group"
    CLASS = "class"
    HOME = "home"


@register("flourish.planning.PlanIssued.v1", CONTEXT)
class PlanIssued(Event):
    """A named practitioner issued an action plan; the platform only ever suggests."""

    personal = frozenset({"strand", "target_statements", "activities", "frequency", "sessions_per_week", "session_minutes"})

    plan_id: UUID
    plan_version: int
    kind: PlanKind
    pupil_id: UUID | None
    strand: str
    target_statements: list[str]
    activities: list[str]
    frequency: str
    practitioner_id: str
    review_on: date
    issued_at: datetime
    # Added fields keep their defaults so that older PlanIssued.v1 messages still decode.
    pupil_ids: list[UUID] = Field(default_factory=list, description="Every pupil of a group plan")
    class_id: UUID | None = None
    sessions_per_week: int | None = None
    session_minutes: int | None = None
    supersedes_version: int | None = None


@register("flourish.planning.PlanReviewed.v1", CONTEXT)
class PlanReviewed(Event):
    """A plan was reviewed against the pupil's latest scores on its strand."""

    personal = frozenset({"strand_percent_now", "change_since_previous_plan", "change_since_baseline", "need_percents_now"})

    plan_id: UUID
    plan_version: int
    pupil_id: UUID | None
    reviewed_by: str
    reviewed_at: datetime
    strand_percent_now: float | None = None
    change_since_previous_plan: float | None = None
    change_since_baseline: float | None = None
    need_percents_now: dict[str, float] = Field(default_factory=dict)
    assessment_id: UUID | None = None


@register("flourish.planning.SessionLogged.v1", CONTEXT)
class SessionLogged(Event):
    """A session of a plan was held; one event per pupil who attended (pupil_id None: a class plan)."""

    personal = frozenset({"minutes", "activities_done", "has_note"})

    session_id: UUID
    plan_id: UUID
    pupil_id: UUID | None
    held_on: date
    minutes: int
    activities_done: list[str]
    logged_by: str
    # The free-text note is personal data: it stays in the planning service, never in an event.
    has_note: bool = False


@register("flourish.planning.PlanClosed.v1", CONTEXT)
class PlanClosed(Event):
    """The plan's work is over; no more sessions are logged against it."""

    plan_id: UUID
    plan_version: int
    pupil_id: UUID | None
    closed_by: str
    closed_at: datetime
