"""Scoring, with its figures taken from the intervention report."""

from __future__ import annotations

from fractions import Fraction

import pytest

from services.assessment.domain.errors import MissingRatings
from services.assessment.domain.framework import framework_from_data
from services.assessment.domain.scoring import (
    meets_threshold,
    need_percent,
    published,
    score_strand,
    strand_percent,
    working_at,
)
from services.assessment.framework_store import sample_framework
from shared.events.assessment import Level
from tests.unit.assessment.report import (
    REPORT_FOCUS,
    REPORT_NEED_PERCENTS,
    REPORT_STRAND_PERCENTS,
    levels_at,
)

SAMPLE = sample_framework()


@pytest.mark.parametrize(("needs", "strand"), [((52, 28, 28), 36), ((59, 43, 30), 44), ((70, 57, 41), 56)])
def test_the_strand_percent_is_the_mean_of_its_needs_as_in_the_report(needs, strand):
    assert strand_percent(needs) == strand


def test_a_need_percent_is_points_scored_over_points_possible():
    assert need_percent(23, 45) == Fraction(2300, 45)
    assert published(need_percent(23, 45)) == 51.1
    assert need_percent(45, 45) == 100 and need_percent(0, 45) == 0


@pytest.mark.parametrize("plan", [1, 2, 3])
def test_the_report_child_rated_on_the_sample_framework_scores_the_reports_strand_figures(plan):
    score = score_strand(SAMPLE, "being", levels_at(plan))

    assert round(published(score.percent)) == REPORT_STRAND_PERCENTS[plan]
    for need, percent in score.need_percents().items():
        # 15 statements of 0-3 points: a need moves in steps of 2.2%, the report printed whole numbers.
        assert abs(percent - REPORT_NEED_PERCENTS[plan][need]) <= 1.5
    assert not score.threshold_met


def test_the_statements_still_at_rarely_or_emerging_are_the_reports_focus_list():
    score = score_strand(SAMPLE, "being", levels_at(3))
    assert score.focus_statements == tuple(f"being.{n}" for n in REPORT_FOCUS)


def test_the_child_works_at_being_until_being_reaches_64_percent():
    below = score_strand(SAMPLE, "being", levels_at(3))
    assert working_at(SAMPLE, {"being": below.threshold_met}) == "being"

    secure_enough = dict.fromkeys(SAMPLE.statement_ids(["being"]), Level.DEVELOPING)  # 66.7%
    met = score_strand(SAMPLE, "being", secure_enough)
    assert met.threshold_met and working_at(SAMPLE, {"being": True}) == "doing"


def _framework_with_25_statements_per_need():
    """Being with 25 statements per need (75 points), so 64% is exactly 48 points."""
    data = SAMPLE.document.model_dump(mode="json")
    number = 1
    for need in data["strands"][0]["needs"]:
        need["statements"] = [{"number": number + i, "text": f"statement {number + i}"} for i in range(25)]
        number += 25
    return framework_from_data(data)


def test_a_strand_at_exactly_the_threshold_meets_it_and_one_point_less_does_not():
    framework = _framework_with_25_statements_per_need()
    ids = framework.statement_ids(["being"])
    # 48 of 75 points in every need: 24 Developing (48) and one Rarely.
    exactly = {s: (Level.RARELY if i % 25 == 0 else Level.DEVELOPING) for i, s in enumerate(ids)}
    score = score_strand(framework, "being", exactly)
    assert score.percent == 64 and score.threshold_met

    one_less = dict(exactly)
    one_less[ids[1]] = Level.EMERGING
    assert not score_strand(framework, "being", one_less).threshold_met


def test_the_threshold_is_compared_exactly_not_in_floating_point():
    assert meets_threshold(Fraction(64), 64.0)
    assert not meets_threshold(Fraction(6399, 100), 64)


def test_a_strand_with_an_unrated_statement_cannot_be_scored():
    levels = levels_at(1)
    del levels["being.44"]
    with pytest.raises(MissingRatings) as missing:
        score_strand(SAMPLE, "being", levels)
    assert missing.value.missing == {None: ["being.44"]}


def test_a_child_who_has_met_every_strand_works_at_the_last():
    assert working_at(SAMPLE, dict.fromkeys(SAMPLE.strand_order, True)) == "interdependence"


def test_a_strand_not_yet_scored_is_where_a_child_works_even_if_later_ones_are_met():
    assert working_at(SAMPLE, {"being": True, "thinking": True}) == "doing"
