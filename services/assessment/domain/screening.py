"""Whole-class (or group) screening: the class profile, and progress from a pupil's baseline.

The profile shows, for every child, the strand they work at beside the strand expected for their
age on the day they were screened, flags the children working below it for extra support, and
gives the distribution of scores per strand and need (where a class's weakest area is).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import UUID

from services.assessment.domain.framework import Framework
from services.assessment.domain.scoring import meets_threshold, strand_rank


def age_in_months(date_of_birth: date, on: date) -> int:
    """Whole months of age on a day (a child born on the 31st turns a month older on the 30th)."""
    months = (on.year - date_of_birth.year) * 12 + (on.month - date_of_birth.month)
    if on.day < date_of_birth.day:
        months -= 1
    return max(months, 0)


@dataclass(frozen=True)
class StrandResult:
    percent: float
    threshold_met: bool
    need_percents: Mapping[str, float]


@dataclass(frozen=True)
class ChildResult:
    """A child of the class and their latest completed assessment (None: not assessed yet)."""

    pupil_id: UUID
    name: str
    date_of_birth: date | None
    assessment_id: UUID | None = None
    completed_at: datetime | None = None
    working_at: str | None = None
    strands: Mapping[str, StrandResult] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildProfile:
    pupil_id: UUID
    name: str
    assessment_id: UUID | None
    screened_on: date | None
    age_months: int | None
    working_at: str | None
    expected: str | None
    flagged: bool
    strand_percents: dict[str, float]


@dataclass(frozen=True)
class Spread:
    assessed: int
    mean: float | None
    lowest: float | None
    highest: float | None
    below_threshold: int


@dataclass(frozen=True)
class StrandDistribution:
    strand: str
    name: str
    working_at: int
    expected: int
    percent: Spread
    needs: dict[str, Spread]


@dataclass(frozen=True)
class ClassProfile:
    framework_version: str
    threshold_percent: float
    children: list[ChildProfile]
    flagged: list[UUID]
    not_assessed: list[UUID]
    strands: list[StrandDistribution]


def class_profile(framework: Framework, children: Sequence[ChildResult], today: date) -> ClassProfile:
    profiles = [_child(framework, child, today) for child in children]
    return ClassProfile(
        framework_version=framework.version,
        threshold_percent=framework.threshold_percent,
        children=profiles,
        flagged=[p.pupil_id for p in profiles if p.flagged],
        not_assessed=[p.pupil_id for p in profiles if p.assessment_id is None],
        strands=[_distribution(framework, strand, children, profiles) for strand in framework.strand_order],
    )


def _child(framework: Framework, child: ChildResult, today: date) -> ChildProfile:
    # The age that matters is the age on the day of screening, not today's.
    screened_on = child.completed_at.date() if child.completed_at else None
    age = age_in_months(child.date_of_birth, screened_on or today) if child.date_of_birth else None
    expected = framework.expected_strand(age) if age is not None else None
    flagged = (
        child.working_at is not None and expected is not None and child.working_at in framework.strands
        and strand_rank(framework, child.working_at) < strand_rank(framework, expected)
    )
    return ChildProfile(
        pupil_id=child.pupil_id, name=child.name, assessment_id=child.assessment_id, screened_on=screened_on,
        age_months=age, working_at=child.working_at, expected=expected, flagged=flagged,
        strand_percents={strand: result.percent for strand, result in child.strands.items()},
    )


def _distribution(framework: Framework, strand_id: str, children: Sequence[ChildResult],
                  profiles: Sequence[ChildProfile]) -> StrandDistribution:
    strand = framework.strand(strand_id)
    results = [child.strands[strand_id] for child in children if strand_id in child.strands]
    threshold = framework.threshold_percent
    needs = {
        need.id: _spread([r.need_percents[need.id] for r in results if need.id in r.need_percents], threshold)
        for need in strand.needs
    }
    return StrandDistribution(
        strand=strand_id, name=strand.name,
        working_at=sum(1 for p in profiles if p.working_at == strand_id),
        expected=sum(1 for p in profiles if p.expected == strand_id),
        percent=_spread([r.percent for r in results], threshold),
        needs=needs,
    )


def _spread(values: Sequence[float], threshold: float) -> Spread:
    if not values:
        return Spread(0, None, None, None, 0)
    return Spread(
        assessed=len(values), mean=round(statistics.fmean(values), 1), lowest=min(values), highest=max(values),
        below_threshold=sum(1 for v in values if not meets_threshold(v, threshold)),
    )


# --- Progress from the baseline ---------------------------------------------------------------


@dataclass(frozen=True)
class AssessmentPoint:
    """One completed assessment in a pupil's series."""

    assessment_id: UUID
    completed_at: datetime
    framework_version: str
    baseline: bool
    working_at: str
    strands: Mapping[str, StrandResult]


@dataclass(frozen=True)
class Change:
    baseline: float
    latest: float
    change: float


@dataclass(frozen=True)
class StrandProgress:
    strand: str
    baseline_assessment_id: UUID
    latest_assessment_id: UUID
    percent: Change
    needs: dict[str, Change]


def progress(series: Sequence[AssessmentPoint]) -> list[StrandProgress]:
    """Per strand: from its first score (the baseline) to its latest, and the change per need."""
    first: dict[str, AssessmentPoint] = {}
    last: dict[str, AssessmentPoint] = {}
    for point in sorted(series, key=lambda p: p.completed_at):
        for strand in point.strands:
            first.setdefault(strand, point)
            last[strand] = point
    return [_strand_progress(strand, first[strand], last[strand]) for strand in first]


def _strand_progress(strand: str, baseline: AssessmentPoint, latest: AssessmentPoint) -> StrandProgress:
    before, now = baseline.strands[strand], latest.strands[strand]
    needs = {
        need: _change(before.need_percents[need], now.need_percents[need])
        for need in before.need_percents
        if need in now.need_percents
    }
    return StrandProgress(strand, baseline.assessment_id, latest.assessment_id, _change(before.percent, now.percent), needs)


def _change(before: float, after: float) -> Change:
    return Change(before, after, round(after - before, 1))
