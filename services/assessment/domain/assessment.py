"""An assessment: one pupil, some strands, one framework version; started, rated, completed.

The aggregate is rebuilt from its stream (`assessment-<id>`): AssessmentStarted, the
ObservationRecorded ratings, then AssessmentCompleted and one StrandScored per strand. It decides
what completing produces; it never changes once completed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from services.assessment.domain.errors import (
    AssessmentAlreadyCompleted,
    InvalidAssessmentRequest,
    MissingRatings,
)
from services.assessment.domain.framework import Framework
from services.assessment.domain.scoring import StrandScore, published, score_strand, working_at
from shared.events.assessment import (
    AssessmentCompleted,
    AssessmentStarted,
    Level,
    ObservationRecorded,
    StrandScored,
)
from shared.events.registry import Event


def assessment_stream(assessment_id: UUID) -> str:
    return f"assessment-{assessment_id}"


def ordered_strands(framework: Framework, strands: Iterable[str]) -> list[str]:
    """The requested strands, checked against the framework, once each, in developmental order."""
    wanted = list(dict.fromkeys(strands))
    if not wanted:
        raise InvalidAssessmentRequest("name at least one strand to assess")
    for strand in wanted:
        framework.strand(strand)  # UnknownStrand for a strand the framework does not have
    return [s for s in framework.strand_order if s in wanted]


@dataclass(frozen=True)
class PupilHistory:
    """What earlier completed assessments say about a pupil: whether each strand's latest score met
    the threshold (as decided, on exact values, when it was scored)."""

    strands_met: Mapping[str, bool] = field(default_factory=dict)
    has_completed_assessment: bool = False


@dataclass(frozen=True)
class _Rating:
    statement_id: str
    level: Level
    observed_at: datetime
    sequence: int


@dataclass
class Assessment:
    assessment_id: UUID
    pupil_id: UUID
    framework_version: str
    strands: tuple[str, ...]
    screening_id: UUID | None
    version: int = 0
    completed: AssessmentCompleted | None = None
    ratings: dict[UUID, _Rating] = field(default_factory=dict)

    @classmethod
    def replay(cls, events: Sequence[Event]) -> Assessment:
        if not events or not isinstance(events[0], AssessmentStarted):
            raise ValueError("an assessment stream starts with AssessmentStarted")
        started = events[0]
        assessment = cls(started.assessment_id, started.pupil_id, started.framework_version,
                         tuple(started.strands), started.screening_id, version=1)
        for event in events[1:]:
            assessment.apply(event)
        return assessment

    def apply(self, event: Event) -> None:
        self.version += 1
        if isinstance(event, ObservationRecorded):
            if event.corrects is not None:
                # A correction takes the place of the rating it corrects, at the same moment.
                self.ratings.pop(event.corrects, None)
            self.ratings[event.observation_id] = _Rating(event.statement_id, event.level, event.observed_at, self.version)
        elif isinstance(event, AssessmentCompleted):
            self.completed = event

    def current_levels(self) -> dict[str, Level]:
        """The level of each rated statement: its latest observation (a later one supersedes)."""
        latest: dict[str, _Rating] = {}
        for rating in self.ratings.values():
            best = latest.get(rating.statement_id)
            if best is None or (rating.observed_at, rating.sequence) > (best.observed_at, best.sequence):
                latest[rating.statement_id] = rating
        return {statement: rating.level for statement, rating in latest.items()}

    def missing_statements(self, framework: Framework) -> list[str]:
        levels = self.current_levels()
        return [s for s in framework.statement_ids(self.strands) if s not in levels]

    def ensure_open(self) -> None:
        if self.completed is not None:
            raise AssessmentAlreadyCompleted(self.assessment_id)

    def complete(self, framework: Framework, history: PupilHistory, completed_by: str, now: datetime,
                 expected_strand: str | None = None) -> list[Event]:
        """AssessmentCompleted and one StrandScored per strand; refuses twice, or with gaps."""
        self.ensure_open()
        missing = self.missing_statements(framework)
        if missing:
            raise MissingRatings({self.assessment_id: missing})
        levels = self.current_levels()
        scores = [score_strand(framework, strand, levels) for strand in self.strands]
        latest = {**history.strands_met, **{score.strand: score.threshold_met for score in scores}}
        at = working_at(framework, latest)
        completed = AssessmentCompleted(
            assessment_id=self.assessment_id, pupil_id=self.pupil_id, framework_version=self.framework_version,
            strands=list(self.strands), completed_at=now, baseline=not history.has_completed_assessment,
            working_at_strand=at, screening_id=self.screening_id, completed_by=completed_by,
            expected_strand=expected_strand,
        )
        return [completed, *(self._scored(framework, score, at, history, now) for score in scores)]

    def _scored(self, framework: Framework, score: StrandScore, at: str, history: PupilHistory, now: datetime) -> StrandScored:
        return StrandScored(
            assessment_id=self.assessment_id, pupil_id=self.pupil_id, framework_version=self.framework_version,
            strand=score.strand, need_percents=score.need_percents(), strand_percent=published(score.percent),
            threshold_percent=framework.threshold_percent, threshold_met=score.threshold_met,
            working_at_strand=at, focus_statements=list(score.focus_statements),
            baseline=score.strand not in history.strands_met, scored_at=now,
        )
