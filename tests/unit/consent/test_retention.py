"""Retention periods, the default policy and which pupils' periods have ended, as pure functions."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from services.consent.domain.errors import InvalidRetentionPeriod
from services.consent.domain.retention import (
    DEFAULT_POLICIES,
    PupilClock,
    RetentionPeriod,
    RetentionPolicy,
    effective_policies,
    expiries,
)
from shared.events.consent import DataCategory, RetentionClock


def policy(category: DataCategory, clock: RetentionClock, **period: int) -> RetentionPolicy:
    return RetentionPolicy(uuid.uuid4(), category, clock, RetentionPeriod(**period))


@pytest.mark.parametrize("period", [{}, {"years": 0, "months": 0, "days": 0}, {"days": -1}, {"years": 2, "months": -1},
                                    {"years": 101}])
def test_a_period_of_zero_negative_or_absurd_length_is_refused(period: dict[str, int]) -> None:
    with pytest.raises(InvalidRetentionPeriod):
        RetentionPeriod(**period)


def test_periods_count_calendar_years_months_and_days() -> None:
    assert RetentionPeriod(years=25).after(date(2016, 2, 29)) == date(2041, 2, 28)
    assert RetentionPeriod(months=1).after(date(2026, 1, 31)) == date(2026, 2, 28)
    assert RetentionPeriod(years=1, months=11, days=1).after(date(2025, 2, 15)) == date(2027, 1, 16)
    assert RetentionPeriod(days=30).after(date(2026, 12, 15)) == date(2027, 1, 14)
    assert RetentionPeriod(years=6, months=2).describe() == "6 years, 2 months"


def test_the_documented_default_keeps_everything_until_25_years_after_birth() -> None:
    [default] = DEFAULT_POLICIES
    assert (default.data_category, default.counted_from, default.period) == (
        DataCategory.ALL, RetentionClock.DATE_OF_BIRTH, RetentionPeriod(years=25))
    own = policy(DataCategory.ALL, RetentionClock.LEAVING_DATE, years=6)
    assert effective_policies([own]) == [own]
    extra = policy(DataCategory.ASSESSMENTS, RetentionClock.LAST_ACTIVITY, years=1)
    assert effective_policies([extra]) == [default, extra]


def test_everything_due_on_or_before_the_day_is_found_once_and_unknown_clocks_never_expire() -> None:
    left_long_ago, left_recently, never_left = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    by_leaving = policy(DataCategory.ASSESSMENTS, RetentionClock.LEAVING_DATE, years=1)
    by_closure = policy(DataCategory.ACTION_PLANS, RetentionClock.CASE_CLOSURE, months=6)
    clocks = [
        PupilClock(left_long_ago, left_on=date(2020, 7, 20), case_closed_on=date(2021, 1, 1)),
        PupilClock(left_recently, left_on=date(2026, 7, 20)),
        PupilClock(never_left),
    ]
    found = expiries([by_leaving, by_closure], clocks, date(2026, 11, 26), set())
    assert [(e.pupil_id, e.data_category, e.due_on) for e in found] == [
        (left_long_ago, DataCategory.ACTION_PLANS, date(2021, 7, 1)),
        (left_long_ago, DataCategory.ASSESSMENTS, date(2021, 7, 20)),
    ]
    again = expiries([by_leaving, by_closure], clocks, date(2026, 11, 26),
                     {(left_long_ago, DataCategory.ASSESSMENTS), (left_long_ago, DataCategory.ACTION_PLANS)})
    assert again == []
    later = expiries([by_leaving], clocks, date(2027, 7, 20), {(left_long_ago, DataCategory.ASSESSMENTS)})
    assert [(e.pupil_id, e.due_on) for e in later] == [(left_recently, date(2027, 7, 20))]
