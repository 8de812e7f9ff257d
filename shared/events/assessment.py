"""Events the assessment service publishes: the roster, observations and scored strands."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from uuid import UUID

from pydantic import Field

from shared.events.registry import Event, register

CONTEXT = "assessment"


class Level(StrEnum):
    """How often and how confidently a child shows a skill (the framework's rating levels)."""

    RARELY = "rarely"
    EMERGING = "emerging"
    DEVELOPING = "developing"
    SECURE = "secure"


@register("flourish.assessment.PupilEnrolled.v1", CONTEXT)
class PupilEnrolled(Event):
    """A pupil joined the roster. Names, dates of birth and UPNs never travel in events."""

    pupil_id: UUID
    class_id: UUID | None = None
    enrolled_on: date


@register("flourish.assessment.PupilLeft.v1", CONTEXT)
class PupilLeft(Event):
    pupil_id: UUID
    left_on: date


@register("flourish.assessment.ObservationRecorded.v1", CONTEXT)
class ObservationRecorded(Event):
    """One rating of one statement for one child; a correction is another observation."""

    observation_id: UUID
    pupil_id: UUID
    assessment_id: UUID | None = None
    framework_version: str
    statement_id: str
    level: Level
    observer_id: str
    observed_at: datetime
    corrects: UUID | None = None


@register("flourish.assessment.AssessmentCompleted.v1", CONTEXT)
class AssessmentCompleted(Event):
    assessment_id: UUID
    pupil_id: UUID
    framework_version: str
    strands: list[str]
    completed_at: datetime
    baseline: bool


@register("flourish.assessment.StrandScored.v1", CONTEXT)
class StrandScored(Event):
    """A strand's scores from one completed assessment (the intervention report's profile)."""

    assessment_id: UUID
    pupil_id: UUID
    framework_version: str
    strand: str
    need_percents: dict[str, float]
    strand_percent: float
    threshold_percent: float
    threshold_met: bool
    working_at_strand: str
    focus_statements: list[str] = Field(default_factory=list)
    baseline: bool
    scored_at: datetime
