"""Retention: how long each category of a pupil's data is kept, counted from which date, and
which pupils' periods have ended.

The documented default (DEFAULT_POLICIES), applied to every academy for a category it has not set:
everything held on a pupil (`all`) is kept until 25 years after the pupil's date of birth, the
period the IRMS Information Management Toolkit for Schools gives for records of special
educational needs and pastoral support. A pupil whose date of birth is not on the retention clock
is never expired by a date-of-birth policy: the preview lists them as "clock incomplete" so the
academy can fix it, because an erasure made on a guess cannot be undone.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID, uuid5

from services.consent.domain.errors import InvalidRetentionPeriod
from shared.events.consent import DataCategory, RetentionClock

_DEFAULTS_NAMESPACE = UUID("3d6f4f0e-6a52-4c1b-9d1e-5b0a9c7e2f10")
MAX_YEARS = 100


@dataclass(frozen=True)
class RetentionPeriod:
    years: int = 0
    months: int = 0
    days: int = 0

    def __post_init__(self) -> None:
        if min(self.years, self.months, self.days) < 0:
            raise InvalidRetentionPeriod("a retention period cannot be negative")
        if self.years == self.months == self.days == 0:
            raise InvalidRetentionPeriod("a retention period must be longer than zero")
        if self.years + self.months / 12 + self.days / 366 > MAX_YEARS:
            raise InvalidRetentionPeriod(f"a retention period cannot exceed {MAX_YEARS} years")

    def after(self, start: date) -> date:
        """The day the period ends. 29 February plus whole years ends on 28 February."""
        months = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + months // 12, months % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return date(year, month, day) + timedelta(days=self.days)

    def describe(self) -> str:
        parts = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in
                 ((self.years, "year"), (self.months, "month"), (self.days, "day")) if n]
        return ", ".join(parts)


@dataclass(frozen=True)
class RetentionPolicy:
    policy_id: UUID
    data_category: DataCategory
    counted_from: RetentionClock
    period: RetentionPeriod
    is_default: bool = False


def default_policy_id(category: DataCategory) -> UUID:
    return uuid5(_DEFAULTS_NAMESPACE, f"default:{category.value}")


DEFAULT_POLICIES: tuple[RetentionPolicy, ...] = (
    RetentionPolicy(default_policy_id(DataCategory.ALL), DataCategory.ALL, RetentionClock.DATE_OF_BIRTH,
                    RetentionPeriod(years=25), is_default=True),
)


def effective_policies(academy_policies: list[RetentionPolicy]) -> list[RetentionPolicy]:
    """The academy's own policies, and the defaults for every category it has not set."""
    own = {policy.data_category for policy in academy_policies}
    return sorted([*academy_policies, *(p for p in DEFAULT_POLICIES if p.data_category not in own)],
                  key=lambda p: p.data_category.value)


@dataclass(frozen=True)
class PupilClock:
    """The dates a pupil's retention periods can be counted from (None: not known)."""

    pupil_id: UUID
    left_on: date | None = None
    date_of_birth: date | None = None
    last_activity_on: date | None = None
    case_closed_on: date | None = None

    def start(self, clock: RetentionClock) -> date | None:
        return {
            RetentionClock.LEAVING_DATE: self.left_on,
            RetentionClock.DATE_OF_BIRTH: self.date_of_birth,
            RetentionClock.LAST_ACTIVITY: self.last_activity_on,
            RetentionClock.CASE_CLOSURE: self.case_closed_on,
        }[clock]


@dataclass(frozen=True)
class Expiry:
    pupil_id: UUID
    data_category: DataCategory
    policy_id: UUID
    counted_from: RetentionClock
    due_on: date


def due(policy: RetentionPolicy, clock: PupilClock) -> date | None:
    start = clock.start(policy.counted_from)
    return None if start is None else policy.period.after(start)


def expiries(
    policies: list[RetentionPolicy], clocks: list[PupilClock], until: date, already: set[tuple[UUID, DataCategory]],
) -> list[Expiry]:
    """Every (pupil, category) whose period ends on or before `until` and was not expired yet.

    "On or before": after downtime the scheduler catches up on everything overdue at once.
    """
    found = []
    for clock in clocks:
        for policy in policies:
            if (clock.pupil_id, policy.data_category) in already:
                continue
            due_on = due(policy, clock)
            if due_on is not None and due_on <= until:
                found.append(Expiry(clock.pupil_id, policy.data_category, policy.policy_id, policy.counted_from, due_on))
    return sorted(found, key=lambda e: (e.due_on, str(e.pupil_id), e.data_category.value))


def today(now: datetime) -> date:
    return now.date()
