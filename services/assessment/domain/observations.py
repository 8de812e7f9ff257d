"""Observations: the rules a rating must keep before it becomes an ObservationRecorded.

A rating names a pupil, a statement of a framework version, a level, an observer and the moment
observed; it may belong to an open assessment. A request's ratings are all recorded or none is:
every problem is reported at once, by the rating's index in the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from services.assessment.domain.errors import RatingProblem, RatingsRejected
from services.assessment.domain.framework import Framework
from shared.events.assessment import Level, ObservationRecorded

# Classroom tablets' clocks drift; a rating a few minutes "ahead" is a clock, not the future.
FUTURE_TOLERANCE = timedelta(minutes=5)


def pupil_stream(pupil_id: UUID) -> str:
    return f"pupil-{pupil_id}"


@dataclass(frozen=True)
class Rating:
    """One rating as the request gives it, after the API has parsed it."""

    index: int
    observation_id: UUID
    pupil_id: UUID
    statement_id: str
    level: Level
    observer_id: str
    observed_at: datetime
    framework_version: str | None = None
    assessment_id: UUID | None = None
    has_note: bool = False
    corrects: UUID | None = None


@dataclass(frozen=True)
class AssessmentSlot:
    """What the rules need to know about an assessment a rating is recorded into."""

    assessment_id: UUID
    pupil_id: UUID
    framework_version: str
    strands: tuple[str, ...]
    completed: bool


def decide_observations(
    ratings: Sequence[Rating],
    frameworks: Mapping[str, Framework],
    assessments: Mapping[UUID, AssessmentSlot],
    now: datetime,
) -> list[ObservationRecorded]:
    """The events for a request's ratings, or RatingsRejected naming every rating that breaks a rule.

    `frameworks` holds the versions this trust can use; `assessments` the assessments the ratings
    name (a missing one is unknown).
    """
    problems: list[RatingProblem] = []
    events: list[ObservationRecorded] = []
    seen_keys: dict[tuple[UUID, str, str, datetime], int] = {}
    seen_ids: dict[UUID, int] = {}
    for rating in ratings:
        version, reasons = _version_of(rating, assessments)
        framework = frameworks.get(version) if version else None
        if version and framework is None:
            reasons.append(f"no framework version {version!r} is loaded for this trust")
        if framework is not None and rating.statement_id not in framework.statements:
            reasons.append(f"framework {version!r} has no statement {rating.statement_id!r}")
        elif framework is not None and rating.assessment_id is not None and rating.assessment_id in assessments:
            slot = assessments[rating.assessment_id]
            if framework.statements[rating.statement_id].strand not in slot.strands:
                reasons.append(f"statement {rating.statement_id!r} is not in a strand this assessment covers")
        if rating.observed_at > now + FUTURE_TOLERANCE:
            reasons.append("observed_at is in the future")
        key = (rating.pupil_id, rating.statement_id, rating.observer_id, rating.observed_at)
        if key in seen_keys:
            reasons.append(f"the same rating as rating {seen_keys[key]} (pupil, statement, observer and moment)")
        if rating.observation_id in seen_ids:
            reasons.append(f"the same observation_id as rating {seen_ids[rating.observation_id]}")
        seen_keys.setdefault(key, rating.index)
        seen_ids.setdefault(rating.observation_id, rating.index)
        problems.extend(RatingProblem(rating.index, reason) for reason in reasons)
        if not reasons and version:
            events.append(_event(rating, version))
    if problems:
        raise RatingsRejected(problems)
    return events


def _version_of(rating: Rating, assessments: Mapping[UUID, AssessmentSlot]) -> tuple[str | None, list[str]]:
    """The framework version a rating is against: its assessment's, or the one it names."""
    if rating.assessment_id is None:
        if rating.framework_version is None:
            return None, ["framework_version is required for a rating outside an assessment"]
        return rating.framework_version, []
    slot = assessments.get(rating.assessment_id)
    if slot is None:
        return None, [f"no assessment {rating.assessment_id}"]
    reasons = []
    if slot.pupil_id != rating.pupil_id:
        reasons.append(f"assessment {slot.assessment_id} is of another pupil")
    if slot.completed:
        reasons.append(f"assessment {slot.assessment_id} is already completed")
    if rating.framework_version is not None and rating.framework_version != slot.framework_version:
        reasons.append(f"assessment {slot.assessment_id} uses framework {slot.framework_version!r}")
    return slot.framework_version, reasons


def _event(rating: Rating, version: str) -> ObservationRecorded:
    # Every field was validated on its way in (the API's models, the checks above); building
    # without validating again saves a third of the cost of recording a whole class.
    return ObservationRecorded.model_construct(
        observation_id=rating.observation_id, pupil_id=rating.pupil_id, assessment_id=rating.assessment_id,
        framework_version=version, statement_id=rating.statement_id, level=Level(rating.level),
        observer_id=rating.observer_id, observed_at=rating.observed_at, corrects=rating.corrects,
        has_note=rating.has_note,
    )
