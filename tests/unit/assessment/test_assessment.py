"""The assessment aggregate: replayed from its stream, completed once, never with a gap."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.assessment.domain.assessment import Assessment, PupilHistory, ordered_strands
from services.assessment.domain.errors import AssessmentAlreadyCompleted, InvalidAssessmentRequest, MissingRatings, UnknownStrand
from services.assessment.framework_store import sample_framework
from shared.events.assessment import AssessmentCompleted, AssessmentStarted, Level, ObservationRecorded, StrandScored
from tests.unit.assessment.report import levels_at

SAMPLE = sample_framework()
PUPIL = uuid.uuid4()
T0 = datetime(2017, 7, 12, 10, 0, tzinfo=UTC)


def _started(strands=("being",)) -> AssessmentStarted:
    return AssessmentStarted(assessment_id=uuid.uuid4(), pupil_id=PUPIL, framework_version=SAMPLE.version,
                             strands=list(strands), started_by="staff-1", started_at=T0)


def _rating(started, statement, level, at=T0, corrects=None) -> ObservationRecorded:
    return ObservationRecorded(observation_id=uuid.uuid4(), pupil_id=PUPIL, assessment_id=started.assessment_id,
                               framework_version=SAMPLE.version, statement_id=statement, level=level,
                               observer_id="staff-1", observed_at=at, corrects=corrects)


def _rated(levels, **kwargs):
    started = _started(**kwargs)
    return started, [started, *(_rating(started, s, level) for s, level in levels.items())]


def test_completing_emits_assessment_completed_then_one_strand_scored_per_strand():
    _, stream = _rated(levels_at(1))
    assessment = Assessment.replay(stream)
    events = assessment.complete(SAMPLE, PupilHistory(), "staff-2", T0)

    completed, scored = events
    assert isinstance(completed, AssessmentCompleted) and isinstance(scored, StrandScored)
    assert completed.baseline and completed.working_at_strand == "being" and completed.completed_by == "staff-2"
    assert scored.strand == "being" and scored.strand_percent == 36.3 and scored.baseline
    assert scored.need_percents == {"being.safe": 51.1, "being.special": 28.9, "being.needs-met": 28.9}
    assert scored.threshold_percent == 64 and not scored.threshold_met
    assert assessment.version == 46


def test_completing_with_missing_ratings_names_them():
    levels = levels_at(1)
    for gone in ("being.7", "being.31"):
        del levels[gone]
    started, stream = _rated(levels)
    with pytest.raises(MissingRatings) as error:
        Assessment.replay(stream).complete(SAMPLE, PupilHistory(), "staff-1", T0)
    assert error.value.missing == {started.assessment_id: ["being.7", "being.31"]}
    assert "being.7, being.31" in str(error.value)


def test_a_completed_assessment_cannot_be_completed_again():
    _, stream = _rated(levels_at(2))
    events = Assessment.replay(stream).complete(SAMPLE, PupilHistory(), "staff-1", T0)
    with pytest.raises(AssessmentAlreadyCompleted):
        Assessment.replay([*stream, *events]).complete(SAMPLE, PupilHistory(), "staff-1", T0)


def test_a_later_observation_of_a_statement_supersedes_an_earlier_one():
    started, stream = _rated(levels_at(1))
    later = _rating(started, "being.1", Level.SECURE, at=T0 + timedelta(days=1))
    assert Assessment.replay([*stream, later]).current_levels()["being.1"] is Level.SECURE


def test_a_correction_replaces_the_rating_it_corrects_even_at_the_same_moment():
    started = _started()
    original = _rating(started, "being.1", Level.RARELY)
    correction = _rating(started, "being.1", Level.DEVELOPING, corrects=original.observation_id)
    assessment = Assessment.replay([started, original, correction])
    assert assessment.current_levels() == {"being.1": Level.DEVELOPING}
    assert original.observation_id not in assessment.ratings


def test_only_the_first_completed_assessment_is_the_baseline_and_earlier_strands_count_for_working_at():
    _, stream = _rated(dict.fromkeys(SAMPLE.statement_ids(["doing"]), Level.DEVELOPING), strands=("doing",))
    history = PupilHistory(strands_met={"being": False}, has_completed_assessment=True)
    completed, scored = Assessment.replay(stream).complete(SAMPLE, history, "staff-1", T0)
    assert not completed.baseline and scored.baseline  # first Doing score, not the first assessment
    assert scored.threshold_met and completed.working_at_strand == "being"  # Being is still below 64%


def test_strands_are_checked_and_put_in_developmental_order():
    assert ordered_strands(SAMPLE, ["thinking", "being", "being"]) == ["being", "thinking"]
    with pytest.raises(UnknownStrand):
        ordered_strands(SAMPLE, ["flying"])
    with pytest.raises(InvalidAssessmentRequest):
        ordered_strands(SAMPLE, [])
