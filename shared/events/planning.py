"""Events the planning service publishes: action plans, their reviews and the session log."""

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
