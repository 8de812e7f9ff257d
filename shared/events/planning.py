"""Events the planning service publishes: action plans, their reviews and the session log."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

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


@register("flourish.planning.PlanReviewed.v1", CONTEXT)
class PlanReviewed(Event):
    plan_id: UUID
    plan_version: int
    pupil_id: UUID | None
    reviewed_by: str
    reviewed_at: datetime
    strand_percent_now: float | None = None
    change_since_previous_plan: float | None = None
    change_since_baseline: float | None = None


@register("flourish.planning.SessionLogged.v1", CONTEXT)
class SessionLogged(Event):
    session_id: UUID
    plan_id: UUID
    pupil_id: UUID | None
    held_on: date
    minutes: int
    activities_done: list[str]
    logged_by: str
