"""The request and response bodies of the assessment API (what OpenAPI documents), and how a
response body is made from a row or an event."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from services.assessment.domain.framework import Framework
from shared.events.assessment import AssessmentCompleted, Level, StrandScored
from shared.events.registry import Event

Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
StatementId = Annotated[str, StringConstraints(min_length=1, max_length=100)]
MAX_RATINGS = 5000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Tenancy and roster ------------------------------------------------------------------------


class NameIn(_In):
    name: Text200


class AcademyOut(BaseModel):
    academy_id: UUID
    trust_id: UUID
    name: str


class ImportOut(BaseModel):
    rows: int = Field(description="Pupil rows in the file")
    enrolled: list[dict[str, UUID | int]] = Field(description="New pupils: the file's row and the pupil id given")
    rejoined: int
    moved: int = Field(description="Pupils whose class (registration group) changed")
    updated: int = Field(description="Pupils whose personal details changed")
    left: int
    unchanged: int
    classes_created: list[str]
    ignored_columns: list[str]


class ClassOut(BaseModel):
    class_id: UUID
    academy_id: UUID
    name: str


class PupilSummary(BaseModel):
    pupil_id: UUID
    class_id: UUID | None
    on_roll: bool
    name: str | None
    year_group: str | None


class PupilOut(BaseModel):
    """A pupil's roster record with their personal data (read only within scope)."""

    pupil_id: UUID
    trust_id: UUID
    academy_id: UUID
    class_id: UUID | None
    on_roll: bool
    enrolled_on: date
    left_on: date | None
    upn: str | None = None
    legal_surname: str | None = None
    legal_forename: str | None = None
    preferred_surname: str | None = None
    preferred_forename: str | None = None
    date_of_birth: date | None = None
    gender: str | None = None
    year_group: str | None = None


class PupilAttributesOut(BaseModel):
    """What a Flourish service may read of a pupil (the reporting service's anonymised report): the
    pseudonymous id and two attributes, never a name, date of birth or UPN."""

    pupil_id: UUID
    academy_id: UUID
    gender: str | None = None
    year_group: str | None = None


class GroupIn(_In):
    name: Text200
    pupil_ids: list[UUID] = Field(default_factory=list, max_length=1000)


class GroupOut(BaseModel):
    group_id: UUID
    academy_id: UUID
    name: str
    pupil_ids: list[UUID]


# --- Observations -------------------------------------------------------------------------------


class ObservationIn(_In):
    """One rating: pupil, statement, level, who observed and when; optionally a note."""

    pupil_id: UUID
    statement_id: StatementId = Field(description="e.g. being.12 (strand id and statement number)")
    level: Level
    observed_at: AwareDatetime = Field(description="When the observer saw it (not in the future)")
    observer_id: Text200 | None = Field(None, description="The observer's staff id; default: the caller")
    framework_version: str | None = Field(None, max_length=80, description="Required outside an assessment")
    assessment_id: UUID | None = None
    observation_id: UUID | None = Field(None, description="A client-made id, so an offline device can retry")
    note: Note | None = Field(None, description="Personal data: kept apart, never in events or logs")


class BulkRatingIn(_In):
    pupil_id: UUID
    statement_id: StatementId
    level: Level
    observed_at: AwareDatetime | None = None
    assessment_id: UUID | None = None
    observation_id: UUID | None = None
    note: Note | None = None


class BulkObservationsIn(_In):
    """A whole class's ratings in one request: all are recorded, or none is."""

    observed_at: AwareDatetime = Field(description="When observed; a rating may give its own")
    observer_id: Text200 | None = None
    framework_version: str | None = Field(None, max_length=80, description="For ratings outside an assessment")
    ratings: list[BulkRatingIn] = Field(min_length=1, max_length=MAX_RATINGS)


class RecordedOut(BaseModel):
    recorded: int
    observation_ids: list[UUID]


class CorrectionIn(_In):
    level: Level
    note: Note | None = None


class ObservationOut(BaseModel):
    observation_id: UUID
    pupil_id: UUID
    assessment_id: UUID | None
    framework_version: str
    statement_id: str
    level: Level
    observer_id: str
    observed_at: datetime
    corrects: UUID | None
    note: str | None = None


# --- Assessments --------------------------------------------------------------------------------


class AssessmentStartIn(_In):
    """Name one pupil (an individual profile), or a class or group (a screening)."""

    pupil_id: UUID | None = None
    class_id: UUID | None = None
    group_id: UUID | None = None
    strands: list[Annotated[str, StringConstraints(max_length=40)]] = Field(min_length=1, max_length=6)
    framework_version: str = Field(max_length=80)


class StartedAssessment(BaseModel):
    assessment_id: UUID
    pupil_id: UUID


class LeftOut(BaseModel):
    pupil_id: UUID
    reason: str = Field(description="online_processing_refused: the family opted out of processing by the online tool")


class StartedOut(BaseModel):
    screening_id: UUID | None
    framework_version: str
    strands: list[str]
    assessments: list[StartedAssessment]
    # A screening leaves out the children whose family opted out, and says which.
    left_out: list[LeftOut] = Field(default_factory=list)


class StrandScoreOut(BaseModel):
    strand: str
    need_percents: dict[str, float]
    strand_percent: float
    threshold_percent: float | None = None
    threshold_met: bool
    working_at_strand: str
    focus_statements: list[str]
    baseline: bool


class AssessmentOut(BaseModel):
    assessment_id: UUID
    pupil_id: UUID
    screening_id: UUID | None
    framework_version: str
    strands: list[str]
    started_by: str
    started_at: datetime
    status: str = Field(description="open or completed")
    completed_at: datetime | None
    working_at_strand: str | None
    baseline: bool | None
    rated_statements: int
    missing_statements: list[str]
    scores: list[StrandScoreOut]


class CompletedAssessment(BaseModel):
    assessment_id: UUID
    pupil_id: UUID
    working_at_strand: str
    baseline: bool
    scores: list[StrandScoreOut]


class CompletedOut(BaseModel):
    completed: list[CompletedAssessment]


class ScreeningAssessment(BaseModel):
    assessment_id: UUID
    pupil_id: UUID
    completed: bool


class ScreeningOut(BaseModel):
    screening_id: UUID
    academy_id: UUID
    class_id: UUID | None
    group_id: UUID | None
    framework_version: str
    strands: list[str]
    started_at: datetime
    assessments: list[ScreeningAssessment]


def score_out(row: Any, framework: Framework | None = None) -> StrandScoreOut:
    """A strand score from a strand_scores row (threshold from its framework) or a StrandScored event."""
    return StrandScoreOut(
        strand=row.strand, need_percents=row.need_percents, strand_percent=row.strand_percent,
        threshold_percent=framework.threshold_percent if framework else getattr(row, "threshold_percent", None),
        threshold_met=row.threshold_met, working_at_strand=row.working_at_strand,
        focus_statements=list(row.focus_statements), baseline=row.baseline,
    )


def completed_out(events: list[Event]) -> CompletedOut:
    """What completing emitted: each AssessmentCompleted with the StrandScored events after it."""
    completed: list[CompletedAssessment] = []
    for event in events:
        if isinstance(event, AssessmentCompleted):
            completed.append(CompletedAssessment(assessment_id=event.assessment_id, pupil_id=event.pupil_id,
                                                 working_at_strand=event.working_at_strand, baseline=event.baseline, scores=[]))
        elif isinstance(event, StrandScored):
            completed[-1].scores.append(score_out(event))
    return CompletedOut(completed=completed)
