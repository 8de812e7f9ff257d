"""Scoring, as the intervention report does it: % per need, the strand %, the threshold, the
strand a child works at, and the statements still to focus on.

* A need's % is the points scored over the points possible on its statements.
* A strand's % is the mean of its needs' %s (52, 28, 28 → 36).
* A strand is met at or above the framework's threshold (64%).
* A child works at the first strand, in developmental order, whose % is below the threshold (or
  that has no score yet): the report's child stays at Being until Being reaches 64%.
* Statements still rated Rarely or Emerging are the recommended focus.

Arithmetic is exact (fractions): a strand at exactly 64% meets a 64% threshold, whatever floating
point would have made of it. Percentages are rounded to one decimal place only when published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from services.assessment.domain.errors import MissingRatings
from services.assessment.domain.framework import Framework
from shared.events.assessment import Level

FOCUS_LEVELS = frozenset({Level.RARELY, Level.EMERGING})
PUBLISHED_DECIMALS = 1


@dataclass(frozen=True)
class NeedScore:
    need: str
    points_scored: int
    points_possible: int

    @property
    def percent(self) -> Fraction:
        return need_percent(self.points_scored, self.points_possible)


@dataclass(frozen=True)
class StrandScore:
    strand: str
    needs: tuple[NeedScore, ...]
    percent: Fraction
    threshold_met: bool
    focus_statements: tuple[str, ...]

    def need_percents(self) -> dict[str, float]:
        return {need.need: published(need.percent) for need in self.needs}


def need_percent(points_scored: int, points_possible: int) -> Fraction:
    """Points scored / points possible over a need's statements, as a percentage."""
    if points_possible <= 0:
        raise ValueError("a need has statements, so points are possible")
    return Fraction(100 * points_scored, points_possible)


def strand_percent(need_percents: Sequence[Fraction | float | int]) -> Fraction:
    """The mean of the needs' percentages (the report: 52, 28, 28 → 36)."""
    if not need_percents:
        raise ValueError("a strand has needs")
    return sum((Fraction(p) for p in need_percents), Fraction(0)) / len(need_percents)


def meets_threshold(percent: Fraction | float, threshold_percent: float) -> bool:
    # Fraction(str(…)) reads 64.0 as exactly 64, not as the nearest binary double.
    return Fraction(percent) >= Fraction(str(threshold_percent))


def published(percent: Fraction | float) -> float:
    return round(float(percent), PUBLISHED_DECIMALS)


def score_strand(framework: Framework, strand_id: str, ratings: Mapping[str, Level]) -> StrandScore:
    """Score one strand from a level per statement; every statement of the strand must be rated."""
    missing = [s for s in framework.statement_ids([strand_id]) if s not in ratings]
    if missing:
        raise MissingRatings({None: missing})
    points = framework.points
    needs = []
    focus = []
    for need_id, statement_ids in framework.need_statements(strand_id):
        scored = 0
        for statement in statement_ids:
            level = ratings[statement]
            scored += points[level]
            if level in FOCUS_LEVELS:
                focus.append(statement)
        needs.append(NeedScore(need_id, scored, framework.max_points * len(statement_ids)))
    percent = strand_percent([need.percent for need in needs])
    return StrandScore(strand_id, tuple(needs), percent, meets_threshold(percent, framework.threshold_percent), tuple(focus))


def working_at(framework: Framework, strands_met: Mapping[str, bool]) -> str:
    """The first strand, in developmental order, that is below the threshold or not yet scored.

    `strands_met` holds whether the child's latest score of each strand met the threshold
    (earlier assessments overlaid by this one). A child who has met every strand works at the
    last one.
    """
    for strand in framework.strand_order:
        if not strands_met.get(strand, False):
            return strand
    return framework.strand_order[-1]


def strand_rank(framework: Framework, strand_id: str) -> int:
    """Position in developmental order (Being is 0)."""
    return framework.strand_order.index(strand_id)
