"""The class profile of a screening, and progress from a pupil's baseline."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from services.assessment.domain.screening import (
    AssessmentPoint,
    ChildResult,
    StrandResult,
    age_in_months,
    class_profile,
    progress,
)
from services.assessment.framework_store import sample_framework

SAMPLE = sample_framework()
SCREENED = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def result(percent: float, needs: tuple[float, float, float], strand: str = "being") -> StrandResult:
    ids = [need.id for need in SAMPLE.strand(strand).needs]
    return StrandResult(percent, percent >= 64, dict(zip(ids, needs, strict=True)))


def child(working_at: str | None, born: date, strands=None) -> ChildResult:
    return ChildResult(uuid.uuid4(), "A child", born, uuid.uuid4() if working_at else None,
                       SCREENED if working_at else None, working_at, strands or {})


def test_age_in_months_counts_whole_months():
    assert age_in_months(date(2017, 4, 30), date(2026, 10, 1)) == 113
    assert age_in_months(date(2017, 4, 1), date(2026, 10, 1)) == 114
    assert age_in_months(date(2027, 1, 1), date(2026, 10, 1)) == 0


def test_a_year_4_child_working_at_being_is_flagged_and_one_at_the_expected_strand_is_not():
    behind = child("being", date(2017, 4, 3), {"being": result(36.3, (51.1, 28.9, 28.9))})
    on_track = child("skills-and-structure", date(2017, 6, 5), {"being": result(80.0, (80.0, 80.0, 80.0))})
    not_yet = child(None, date(2017, 1, 1))
    profile = class_profile(SAMPLE, [behind, on_track, not_yet], date(2026, 11, 26))

    assert profile.flagged == [behind.pupil_id] and profile.not_assessed == [not_yet.pupil_id]
    first = profile.children[0]
    assert (first.working_at, first.expected, first.age_months, first.flagged) == ("being", "skills-and-structure", 113, True)
    assert profile.children[1].flagged is False and profile.children[2].flagged is False


def test_the_distribution_shows_per_strand_and_need_where_the_class_is_weakest():
    a = child("being", date(2017, 4, 3), {"being": result(36.3, (51.1, 28.9, 28.9))})
    b = child("being", date(2017, 5, 3), {"being": result(56.3, (68.9, 57.8, 42.2))})
    profile = class_profile(SAMPLE, [a, b], date(2026, 11, 26))
    being = profile.strands[0]
    assert (being.strand, being.working_at, being.expected) == ("being", 2, 0)
    assert (being.percent.assessed, being.percent.mean, being.percent.below_threshold) == (2, 46.3, 2)
    needs_met = being.needs["being.needs-met"]
    assert (needs_met.lowest, needs_met.highest, needs_met.mean) == (28.9, 42.2, 35.5)
    assert profile.strands[4].expected == 2 and profile.strands[4].percent.assessed == 0


def test_the_expected_strand_is_for_the_age_on_the_day_of_screening():
    # Twelve on 1 October 2026 (the screening), though thirteen by the time the profile is read.
    turning_twelve = child("skills-and-structure", date(2014, 9, 1))
    profile = class_profile(SAMPLE, [turning_twelve], date(2027, 10, 2))
    assert profile.children[0].expected == "interdependence" and profile.children[0].flagged

    eleven = child("skills-and-structure", date(2014, 10, 2))
    assert class_profile(SAMPLE, [eleven], date(2027, 10, 2)).children[0].flagged is False


def test_progress_is_measured_from_the_first_completed_assessment_36_to_56():
    times = [datetime(2017, 7, 12, tzinfo=UTC), datetime(2017, 10, 11, tzinfo=UTC), datetime(2017, 12, 13, tzinfo=UTC)]
    figures = [(36.3, (51.1, 28.9, 28.9)), (44.4, (60.0, 42.2, 31.1)), (56.3, (68.9, 57.8, 42.2))]
    series = [
        AssessmentPoint(uuid.uuid4(), at, SAMPLE.version, i == 0, "being", {"being": result(percent, needs)})
        for i, (at, (percent, needs)) in enumerate(zip(times, figures, strict=True))
    ]
    (being,) = progress(list(reversed(series)))
    assert being.baseline_assessment_id == series[0].assessment_id and being.latest_assessment_id == series[2].assessment_id
    assert (being.percent.baseline, being.percent.latest, being.percent.change) == (36.3, 56.3, 20.0)
    assert {need: change.change for need, change in being.needs.items()} == {
        "being.safe": 17.8, "being.special": 28.9, "being.needs-met": 13.3,
    }
