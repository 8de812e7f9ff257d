"""The framework as data: the sample, the schema, and errors that say where the problem is."""

from __future__ import annotations

import copy

import pytest

from services.assessment.domain.errors import FrameworkInvalid
from services.assessment.domain.framework import STRAND_ORDER, framework_from_data, parse_framework
from services.assessment.framework_store import SAMPLE_PATH, sample_framework

SAMPLE = sample_framework()


def _data():
    return copy.deepcopy(SAMPLE.document.model_dump(mode="json"))


def _problem(data) -> FrameworkInvalid:
    with pytest.raises(FrameworkInvalid) as error:
        framework_from_data(data)
    return error.value


def test_the_sample_has_six_strands_in_developmental_order_with_three_needs_each():
    assert SAMPLE.strand_order == STRAND_ORDER
    assert all(len(strand.needs) == 3 for strand in SAMPLE.document.strands)
    assert [need.name for need in SAMPLE.strand("being").needs] == ["Being Safe", "Being Special", "Having Needs Met"]
    assert len(SAMPLE.statement_ids(["being"])) == 45
    assert SAMPLE.threshold_percent == 64
    assert SAMPLE.points == {"rarely": 0, "emerging": 1, "developing": 2, "secure": 3}


@pytest.mark.parametrize(("number", "text"), [
    (3, "Is willing to work with a partner"),
    (8, "Can signal or seek help when upset, unhappy, angry or afraid"),
    (25, "Enjoys hearing or saying their name"),
    (44, "Signals when things are wrong"),
])
def test_the_sample_carries_the_being_statements_the_report_names(number, text):
    assert SAMPLE.statements[f"being.{number}"].text == text


def test_the_sample_carries_the_reports_learning_targets_and_activities():
    special, needs_met = SAMPLE.strand("being").needs[1], SAMPLE.strand("being").needs[2]
    assert "Shows that they feel they belong" in special.targets
    assert "Can wait a little while to get attention" in needs_met.targets
    assert "Balloon tennis" in needs_met.activities


@pytest.mark.parametrize(("months", "strand"), [
    (0, "being"), (5, "being"), (6, "doing"), (30, "thinking"), (48, "power-and-identity"),
    (8 * 12, "skills-and-structure"), (15 * 12, "interdependence"), (30 * 12, "interdependence"),
])
def test_the_strand_expected_for_an_age_follows_the_age_bands(months, strand):
    assert SAMPLE.expected_strand(months) == strand


def test_the_same_content_hashes_the_same_in_yaml_and_json():
    import json

    as_json = parse_framework(json.dumps(SAMPLE.document.model_dump(mode="json")))
    assert as_json.content_hash == parse_framework(SAMPLE_PATH.read_text()).content_hash


def test_an_empty_statement_text_is_reported_by_strand_need_statement_and_field():
    data = _data()
    data["strands"][0]["needs"][1]["statements"][4]["text"] = ""
    problem = _problem(data).problems[0]
    assert (problem.strand, problem.need, problem.statement, problem.field) == ("Being", "Being Special", 20, "text")
    assert "strand 'Being', need 'Being Special', statement 20, field 'text'" in str(_problem(data))


def test_a_level_outside_the_scale_is_refused():
    data = _data()
    data["levels"][3]["level"] = "outstanding"
    assert _problem(data).problems[0].field == "levels.3.level"


def test_points_that_do_not_rise_are_refused():
    data = _data()
    data["levels"][2]["points"] = 1
    assert "rise strictly" in str(_problem(data))


def test_a_gap_in_statement_numbers_names_the_statement():
    data = _data()
    data["strands"][1]["needs"][0]["statements"][2]["number"] = 9
    problem = _problem(data).problems[0]
    assert (problem.strand, problem.statement, problem.field) == ("Doing", 9, "number")


def test_strands_out_of_developmental_order_are_refused():
    data = _data()
    data["strands"][0], data["strands"][1] = data["strands"][1], data["strands"][0]
    assert any(p.field == "strands" for p in _problem(data).problems)


def test_a_strand_without_three_needs_is_refused():
    data = _data()
    data["strands"][2]["needs"].pop()
    assert any(p.strand == "Thinking" and p.field == "needs" for p in _problem(data).problems)


def test_age_bands_that_do_not_follow_on_are_refused():
    data = _data()
    data["strands"][3]["age_band"]["from_months"] = 40
    assert any(p.strand == "Power and Identity" and p.field == "age_band" for p in _problem(data).problems)


def test_a_document_that_is_not_yaml_says_where():
    with pytest.raises(FrameworkInvalid, match="line 2"):
        parse_framework("version: x\n  bad: [unclosed\n")


def test_an_unknown_field_is_named():
    data = _data()
    data["strands"][0]["needs"][0]["statements"][0]["colour"] = "blue"
    problem = _problem(data).problems[0]
    assert (problem.strand, problem.statement, problem.field) == ("Being", 1, "colour")
