"""The suggestion rules: from a pupil's latest scores, the strand to work at, 1–4 learning targets,
activities from the activity bank and a frequency, each with the reason it was chosen.

A suggestion is advice for a practitioner; nothing here issues a plan. The rules follow the
intervention report: work at the strand the child works at (the first below the threshold); aim
at its weakest needs first; targets are statements still rated Rarely or Emerging; one-to-one,
30-minute sessions at Being (twice a week for the first plan, weekly after), groups considered
from Doing on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from services.planning.domain.errors import NoSuggestion
from services.planning.domain.framework import PlanningFramework

MAX_TARGETS = 4
TARGETS_PER_NEED = 2
# Needs within this many points of the weakest are worked on together; further ones wait.
FOCUS_BAND_POINTS = 15.0
ACTIVITIES_PER_NEED = 4
SESSION_MINUTES = 30


@dataclass(frozen=True)
class Score:
    """One strand's scores from one completed assessment (a StrandScored, as planning keeps it)."""

    assessment_id: UUID
    pupil_id: UUID
    framework_version: str
    strand: str
    need_percents: dict[str, float]
    strand_percent: float
    threshold_percent: float
    working_at_strand: str
    focus_statements: list[str]
    baseline: bool
    scored_at: datetime


@dataclass(frozen=True)
class Target:
    statement_id: str
    text: str
    need: str
    need_name: str
    why: str


@dataclass(frozen=True)
class Activity:
    need: str
    activity: str


@dataclass(frozen=True)
class Frequency:
    sessions_per_week: int
    minutes: int
    setting: str  # "one-to-one", "small group" or "whole class"
    why: str

    @property
    def text(self) -> str:
        return f"{self.sessions_per_week} × {self.minutes} min a week, {self.setting}"


@dataclass(frozen=True)
class Suggestion:
    strand: str
    strand_name: str
    kind: str  # the plan kind it fits: individual or class
    framework_version: str
    based_on: list[UUID]
    need_percents: dict[str, float]
    strand_percent: float
    focus_needs: list[str]
    targets: list[Target]
    learning_aims: list[str]
    activities: list[Activity]
    frequency: Frequency
    why: list[str] = field(default_factory=list)


def focus_needs(need_percents: dict[str, float], need_order: list[str], threshold: float) -> list[str]:
    """The needs to work on now, weakest first: the weakest, and any other below the threshold
    within FOCUS_BAND_POINTS of it (ties keep the framework's order)."""
    ranked = sorted((n for n in need_order if n in need_percents), key=lambda n: (need_percents[n], need_order.index(n)))
    if not ranked:
        return []
    weakest = need_percents[ranked[0]]
    return [n for n in ranked if n == ranked[0] or
            (need_percents[n] < threshold and need_percents[n] - weakest <= FOCUS_BAND_POINTS)]


def suggest_for_pupil(framework: PlanningFramework, latest: Score, issued_plans_at_strand: int = 0) -> Suggestion:
    """The next plan for one pupil from their latest scores at the strand they work at."""
    if latest.strand != latest.working_at_strand:
        raise NoSuggestion(f"the latest scores are for {latest.strand}, not the working-at strand {latest.working_at_strand}")
    if latest.strand not in framework.strands:
        raise NoSuggestion(f"strand {latest.strand!r} is not in framework {framework.version}")
    strand = framework.strands[latest.strand]
    order = framework.need_order(strand.id)
    needs = focus_needs(latest.need_percents, order, latest.threshold_percent)
    targets = _targets(framework, needs, latest.focus_statements, latest.need_percents, lambda s: "rated Rarely or Emerging")
    if not targets:
        raise NoSuggestion(f"no statement of {strand.name} is still at Rarely or Emerging")
    frequency = _pupil_frequency(strand.id, framework.strand_order, issued_plans_at_strand)
    percents = ", ".join(f"{framework.needs[n].name} {latest.need_percents[n]:g}%" for n in order if n in latest.need_percents)
    why = [
        f"works at {strand.name}: {latest.strand_percent:g}% is below the {latest.threshold_percent:g}% threshold "
        f"(assessment {latest.assessment_id}, {percents})",
        "focus on " + ", ".join(f"{framework.needs[n].name} ({latest.need_percents[n]:g}%)" for n in needs)
        + f": the weakest need and any within {FOCUS_BAND_POINTS:g} points of it",
        f"{len(latest.focus_statements)} statements are still at Rarely or Emerging; targets are up to "
        f"{TARGETS_PER_NEED} per focus need, {MAX_TARGETS} in all",
        frequency.why,
    ]
    return Suggestion(
        strand=strand.id, strand_name=strand.name, kind="individual", framework_version=framework.version,
        based_on=[latest.assessment_id], need_percents=dict(latest.need_percents),
        strand_percent=latest.strand_percent, focus_needs=needs, targets=targets,
        learning_aims=[aim for n in needs for aim in framework.needs[n].targets],
        activities=_activities(framework, needs), frequency=frequency, why=why,
    )


def suggest_for_class(framework: PlanningFramework, scores: list[Score]) -> Suggestion:
    """Targets for a class's weakest needs from a whole-class screening, for PSHE planning.

    The strand is the earliest strand any pupil works at; needs are ranked by the class mean;
    targets are the focus statements most pupils still have at Rarely or Emerging.
    """
    if not scores:
        raise NoSuggestion("no pupil of this class has been scored yet")
    strand_id = min((s.working_at_strand for s in scores), key=framework.strand_order.index)
    at_strand = [s for s in scores if s.strand == strand_id]
    if not at_strand:
        raise NoSuggestion(f"no pupil of this class has scores at {strand_id}")
    strand = framework.strands[strand_id]
    order = framework.need_order(strand_id)
    means = {n: round(sum(s.need_percents.get(n, 0.0) for s in at_strand) / len(at_strand), 1) for n in order}
    threshold = at_strand[0].threshold_percent
    needs = focus_needs(means, order, threshold)
    counts = Counter(statement for s in at_strand for statement in s.focus_statements)
    ranked = sorted(counts, key=lambda st: (-counts[st], framework.statements[st].number if st in framework.statements else 0))
    targets = _targets(framework, needs, ranked, means,
                       lambda s: f"Rarely or Emerging for {counts[s]} of {len(at_strand)} pupils")
    if not targets:
        raise NoSuggestion(f"no statement of {strand.name} is at Rarely or Emerging for this class")
    class_percent = round(sum(s.strand_percent for s in at_strand) / len(at_strand), 1)
    frequency = Frequency(1, SESSION_MINUTES, "whole class", "a weekly PSHE session led by the class teacher")
    why = [
        f"{len(at_strand)} pupils scored at {strand.name}, the earliest strand any of them works at; class mean "
        f"{class_percent:g}% (" + ", ".join(f"{framework.needs[n].name} {means[n]:g}%" for n in order) + ")",
        "focus on the class's weakest needs: " + ", ".join(framework.needs[n].name for n in needs),
        frequency.why,
    ]
    return Suggestion(
        strand=strand_id, strand_name=strand.name, kind="class", framework_version=framework.version,
        based_on=[s.assessment_id for s in at_strand], need_percents=means, strand_percent=class_percent,
        focus_needs=needs, targets=targets, learning_aims=[aim for n in needs for aim in framework.needs[n].targets],
        activities=_activities(framework, needs), frequency=frequency, why=why,
    )


def _targets(framework: PlanningFramework, needs: list[str], candidates: list[str],
             percents: dict[str, float], reason: Callable[[str], str]) -> list[Target]:
    targets: list[Target] = []
    for need_id in needs:
        need = framework.needs[need_id]
        mine = [s for s in candidates if s in framework.statements and framework.statements[s].need == need_id]
        for statement_id in mine[:TARGETS_PER_NEED]:
            if len(targets) == MAX_TARGETS:
                return targets
            statement = framework.statements[statement_id]
            targets.append(Target(
                statement_id, statement.text, need_id, need.name,
                f"{reason(statement_id)} in {need.name} ({percents[need_id]:g}%)",
            ))
    return targets


def _activities(framework: PlanningFramework, needs: list[str]) -> list[Activity]:
    return [Activity(n, a) for n in needs for a in framework.needs[n].activities[:ACTIVITIES_PER_NEED]]


def _pupil_frequency(strand: str, order: tuple[str, ...], issued_plans_at_strand: int) -> Frequency:
    if order.index(strand) == 0:
        if issued_plans_at_strand == 0:
            return Frequency(2, SESSION_MINUTES, "one-to-one",
                             "at Being: one-to-one with one key adult, twice a week while the relationship is built")
        return Frequency(1, SESSION_MINUTES, "one-to-one",
                         "at Being: one-to-one with one key adult, at least once a week")
    return Frequency(1, SESSION_MINUTES, "small group",
                     "from Doing on: consider a small group if the pupil is ready; one-to-one otherwise")
