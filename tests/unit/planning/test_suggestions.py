"""The suggestion rules on the intervention report's child: three assessments at Being, three plans."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest
import yaml

from services.planning.domain.errors import InvalidPlan, InvalidSession, InvalidTargets, NoSuggestion, WrongPlanState
from services.planning.domain.framework import PlanningFramework
from services.planning.domain.plans import PlanContent, check_can_review, check_content, check_session, progress
from services.planning.domain.suggestions import Score, suggest_for_class, suggest_for_pupil
from shared.events.assessment import Level
from shared.events.planning import PlanKind
from tests.unit.assessment.report import ACTION_PLANS, levels_at

SAMPLE = "services/assessment/frameworks/flourish-sample-1.yaml"


@pytest.fixture(scope="module")
def framework() -> PlanningFramework:
    with open(SAMPLE) as file:
        return PlanningFramework.from_data(yaml.safe_load(file))


def report_score(plan: int, pupil: uuid.UUID | None = None) -> Score:
    """The report child's Being scores at an action plan, as StrandScored carries them."""
    needs = {need: round(points / 45 * 100, 1) for need, points in ACTION_PLANS[plan].items()}
    focus = [s for s, level in levels_at(plan).items() if level in (Level.RARELY, Level.EMERGING)]
    return Score(uuid.uuid4(), pupil or uuid.uuid4(), "flourish-sample-1", "being", needs,
                 round(sum(needs.values()) / 3, 1), 64.0, "being", focus, plan == 1, datetime.now(UTC))


def target_needs(suggestion) -> list[str]:
    return [t.need for t in suggestion.targets]


def test_plan_one_works_at_being_on_being_special_first_twice_a_week_one_to_one(framework):
    suggestion = suggest_for_pupil(framework, report_score(1), issued_plans_at_strand=0)
    assert suggestion.strand == "being"
    # 52, 28, 28: Being Special and Having Needs Met tie as weakest; Being Safe (24 points above) waits.
    assert suggestion.focus_needs == ["being.special", "being.needs-met"]
    assert target_needs(suggestion) == ["being.special", "being.special", "being.needs-met", "being.needs-met"]
    assert "Shows that they feel they belong" in suggestion.learning_aims  # the report's first target
    frequency = suggestion.frequency
    assert (frequency.sessions_per_week, frequency.minutes, frequency.setting) == (2, 30, "one-to-one")
    assert "Sand tray play side by side" not in [a.activity for a in suggestion.activities]  # Being Safe's bank
    assert "Free painting with positive comments and praise" in [a.activity for a in suggestion.activities]


def test_plan_two_targets_being_special_and_having_needs_met_weekly(framework):
    suggestion = suggest_for_pupil(framework, report_score(2), issued_plans_at_strand=1)
    # 59, 43, 30: Having Needs Met is weakest, Being Special within 15 points: the report's second plan.
    assert suggestion.focus_needs == ["being.needs-met", "being.special"]
    assert set(target_needs(suggestion)) == {"being.needs-met", "being.special"}
    assert {"Can wait a little while to get attention",
            "Can show you that they know you will listen to them"} <= set(suggestion.learning_aims)
    assert suggestion.frequency.sessions_per_week == 1


def test_plan_three_targets_only_having_needs_met_from_the_reports_focus_statements(framework):
    score = report_score(3)
    suggestion = suggest_for_pupil(framework, score, issued_plans_at_strand=2)
    # 70, 57, 41: Being Special is 16 points above the weakest, so the third plan is Having Needs Met only.
    assert suggestion.focus_needs == ["being.needs-met"]
    assert [t.statement_id for t in suggestion.targets] == ["being.35", "being.36"]
    assert all(t.statement_id in score.focus_statements for t in suggestion.targets)
    assert "Picture of a body and where feelings are felt" in [a.activity for a in suggestion.activities]


def test_every_suggestion_explains_itself_with_scores_and_statements(framework):
    score = report_score(3)
    suggestion = suggest_for_pupil(framework, score)
    assert str(score.assessment_id) in suggestion.why[0] and "56" in suggestion.why[0] and "64" in suggestion.why[0]
    assert "Having Needs Met 42.2%" in suggestion.why[0]
    assert all("Rarely or Emerging" in t.why and "Having Needs Met" in t.why for t in suggestion.targets)
    assert suggestion.based_on == [score.assessment_id]
    assert 1 <= len(suggestion.targets) <= 4


def test_from_doing_on_a_small_group_is_suggested(framework):
    score = Score(uuid.uuid4(), uuid.uuid4(), "flourish-sample-1", "doing",
                  {"doing.exploring": 40.0, "doing.trying": 70.0, "doing.playing": 50.0}, 53.3, 64.0, "doing",
                  ["doing.1", "doing.2", "doing.3"], False, datetime.now(UTC))
    suggestion = suggest_for_pupil(framework, score)
    assert suggestion.frequency.setting == "small group"
    assert target_needs(suggestion)[0] == suggestion.focus_needs[0]


def test_nothing_is_suggested_without_statements_at_rarely_or_emerging(framework):
    score = report_score(3)
    empty = Score(**{**score.__dict__, "focus_statements": []})
    with pytest.raises(NoSuggestion):
        suggest_for_pupil(framework, empty)


def test_a_class_plan_targets_the_class_s_weakest_needs_by_the_most_common_statements(framework):
    scores = [report_score(1), report_score(2), report_score(3)]
    suggestion = suggest_for_class(framework, scores)
    assert suggestion.kind == "class" and suggestion.strand == "being"
    assert suggestion.focus_needs[0] == "being.needs-met"  # class means: 60.7, 42.2, 34.8
    assert suggestion.frequency.setting == "whole class"
    assert "of 3 pupils" in suggestion.targets[0].why


def content(**overrides) -> PlanContent:
    values = dict(kind=PlanKind.INDIVIDUAL, pupil_ids=[uuid.uuid4()], class_id=None, strand="being",
                  targets=["being.21"], activities=["Free painting"], sessions_per_week=2, session_minutes=30,
                  setting="one-to-one", review_on=date(2026, 1, 1))
    values.update(overrides)
    return PlanContent(**values)


def test_targets_must_be_statements_of_the_plan_s_strand(framework):
    check_content(content(), framework)
    with pytest.raises(InvalidTargets) as refused:
        check_content(content(targets=["being.21", "doing.1", "being.99"]), framework)
    assert refused.value.wrong == ["doing.1", "being.99"]
    with pytest.raises(InvalidPlan):
        check_content(content(targets=[f"being.{n}" for n in range(1, 6)]), framework)
    with pytest.raises(InvalidPlan):
        check_content(content(kind=PlanKind.GROUP), framework)


def test_a_review_before_issue_and_a_session_for_a_closed_plan_or_in_the_future_are_refused():
    with pytest.raises(WrongPlanState):
        check_can_review("draft")
    pupil = uuid.uuid4()
    with pytest.raises(WrongPlanState):
        check_session("closed", date(2025, 1, 1), date(2025, 1, 2), 30, [pupil], [pupil])
    with pytest.raises(InvalidSession, match="future"):
        check_session("issued", date(2025, 1, 3), date(2025, 1, 2), 30, [pupil], [pupil])


def test_progress_is_measured_since_the_previous_plan_and_since_baseline():
    assert progress(56.3, 44.4, 36.3).__dict__ == {"percent_now": 56.3, "since_previous_plan": 11.9, "since_baseline": 20.0}
