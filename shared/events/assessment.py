"""Events the assessment service publishes: the roster, observations, assessments and scored strands.

No event carries identifying data: pupils appear only as pseudonymous UUIDs and staff as their
pseudonymous subject ids. Names, dates of birth, UPNs, gender, year groups and the free-text notes
of observations stay in the assessment service's personal-data tables. What an event says about a
child (a level, a statement, a score: each model's `personal` fields) is sealed with the child's
data key in the event store and on Kafka (shared.events.sealing).

Streams: a pupil's roster events and the observations made outside any assessment go to
``pupil-<pupil_id>``; an assessment's start, its ratings, its completion and its scores go to
``assessment-<assessment_id>``. Every event is keyed by its pupil on Kafka, so one pupil's
events stay in order.
"""

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
    """A pupil joined the roster (or rejoined it after leaving). Names, dates of birth and UPNs
    never travel in events."""

    pupil_id: UUID
    class_id: UUID | None = None
    enrolled_on: date


@register("flourish.assessment.PupilClassChanged.v1", CONTEXT)
class PupilClassChanged(Event):
    """A pupil moved to another class (registration group); None: no class any more."""

    pupil_id: UUID
    class_id: UUID | None = None
    changed_on: date


@register("flourish.assessment.PupilLeft.v1", CONTEXT)
class PupilLeft(Event):
    pupil_id: UUID
    left_on: date


@register("flourish.assessment.ObservationRecorded.v1", CONTEXT)
class ObservationRecorded(Event):
    """One rating of one statement for one child; a correction is another observation.

    `has_note` says that the observer wrote a free-text note: the note itself is personal data
    and stays in the assessment service (keyed by `observation_id`), never in an event.
    """

    personal = frozenset({"statement_id", "level", "has_note", "corrects"})

    observation_id: UUID
    pupil_id: UUID
    assessment_id: UUID | None = None
    framework_version: str
    statement_id: str
    level: Level
    observer_id: str
    observed_at: datetime
    corrects: UUID | None = None
    has_note: bool = False


@register("flourish.assessment.AssessmentStarted.v1", CONTEXT)
class AssessmentStarted(Event):
    """An assessment of one pupil on some strands began: an individual profile, or one pupil's
    part of a group or whole-class screening (then `screening_id` and the class or group are set)."""

    personal = frozenset({"strands"})

    assessment_id: UUID
    pupil_id: UUID
    framework_version: str
    strands: list[str]
    screening_id: UUID | None = None
    class_id: UUID | None = None
    group_id: UUID | None = None
    started_by: str
    started_at: datetime


@register("flourish.assessment.AssessmentCompleted.v1", CONTEXT)
class AssessmentCompleted(Event):
    """An assessment was completed; one StrandScored per strand follows on the same stream.

    `baseline` is true for the pupil's first completed assessment: progress is measured from it.
    """

    personal = frozenset({"strands", "baseline", "working_at_strand", "expected_strand"})

    assessment_id: UUID
    pupil_id: UUID
    framework_version: str
    strands: list[str]
    completed_at: datetime
    baseline: bool
    working_at_strand: str
    screening_id: UUID | None = None
    completed_by: str
    # The strand expected for the child's age on the day (worked out where the date of birth is
    # held, so that no other service needs it); None when the age is not known.
    expected_strand: str | None = None


@register("flourish.assessment.StrandScored.v1", CONTEXT)
class StrandScored(Event):
    """A strand's scores from one completed assessment (the intervention report's profile).

    `need_percents` maps each need id to points scored / points possible over its statements;
    `strand_percent` is the mean of the needs' percents; both are rounded to one decimal place,
    and `threshold_met` was decided on the exact values. `working_at_strand` is the first strand,
    in developmental order, whose latest % is below the threshold. `focus_statements` are the
    statements still rated Rarely or Emerging. `baseline` is true when this is the first score
    of this strand for this pupil.
    """

    personal = frozenset({"strand", "need_percents", "strand_percent", "threshold_percent", "threshold_met",
                          "working_at_strand", "focus_statements", "baseline"})

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
