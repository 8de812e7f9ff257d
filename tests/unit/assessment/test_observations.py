"""The rules a rating keeps before it is recorded; a request's ratings are all or none."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.assessment.domain.errors import RatingsRejected
from services.assessment.domain.observations import AssessmentSlot, Rating, decide_observations
from services.assessment.framework_store import sample_framework
from shared.events.assessment import Level

SAMPLE = sample_framework()
FRAMEWORKS = {SAMPLE.version: SAMPLE}
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
PUPIL = uuid.uuid4()


def rating(index=0, **changes) -> Rating:
    values = dict(index=index, observation_id=uuid.uuid4(), pupil_id=PUPIL, statement_id="being.3",
                  level=Level.EMERGING, observer_id="staff-1", observed_at=NOW - timedelta(hours=1),
                  framework_version=SAMPLE.version)
    values.update(changes)
    return Rating(**values)


def problems(ratings, assessments=None) -> dict[int, str]:
    with pytest.raises(RatingsRejected) as error:
        decide_observations(ratings, FRAMEWORKS, assessments or {}, NOW)
    return {p.index: p.message for p in error.value.problems}


def test_valid_ratings_become_observations_with_their_framework_version():
    events = decide_observations([rating(0), rating(1, statement_id="being.8")], FRAMEWORKS, {}, NOW)
    assert [e.statement_id for e in events] == ["being.3", "being.8"]
    assert all(e.framework_version == SAMPLE.version and e.assessment_id is None for e in events)


def test_a_rating_dated_in_the_future_is_refused_but_a_drifting_clock_is_not():
    assert "future" in problems([rating(observed_at=NOW + timedelta(hours=1))])[0]
    assert decide_observations([rating(observed_at=NOW + timedelta(minutes=2))], FRAMEWORKS, {}, NOW)


def test_an_unknown_statement_or_framework_version_is_named():
    found = problems([rating(0, statement_id="being.46"), rating(1, framework_version="thrive-9")])
    assert "no statement 'being.46'" in found[0] and "no framework version 'thrive-9'" in found[1]


def test_a_rating_outside_an_assessment_needs_a_framework_version():
    assert "framework_version is required" in problems([rating(framework_version=None)])[0]


def test_one_bad_rating_refuses_the_whole_request_and_names_every_bad_one():
    ratings = [rating(i, statement_id=f"being.{i + 1}") for i in range(30)]
    ratings[7] = rating(7, statement_id="nope")
    ratings[21] = rating(21, observed_at=NOW + timedelta(days=1))
    assert set(problems(ratings)) == {7, 21}


def test_the_same_rating_twice_in_one_request_is_a_duplicate():
    first = rating(0)
    again = rating(1, observed_at=first.observed_at)
    assert "the same rating as rating 0" in problems([first, again])[1]


def test_ratings_into_an_assessment_must_fit_it():
    assessment_id = uuid.uuid4()
    slot = AssessmentSlot(assessment_id, PUPIL, SAMPLE.version, ("being",), completed=False)
    ok = decide_observations([rating(assessment_id=assessment_id, framework_version=None)], FRAMEWORKS,
                             {assessment_id: slot}, NOW)
    assert ok[0].assessment_id == assessment_id

    found = problems([
        rating(0, assessment_id=assessment_id, statement_id="doing.1"),
        rating(1, assessment_id=assessment_id, pupil_id=uuid.uuid4()),
        rating(2, assessment_id=uuid.uuid4()),
    ], {assessment_id: slot})
    assert "not in a strand this assessment covers" in found[0]
    assert "of another pupil" in found[1] and "no assessment" in found[2]


def test_a_completed_assessment_takes_no_more_ratings():
    assessment_id = uuid.uuid4()
    slot = AssessmentSlot(assessment_id, PUPIL, SAMPLE.version, ("being",), completed=True)
    assert "already completed" in problems([rating(assessment_id=assessment_id)], {assessment_id: slot})[0]
