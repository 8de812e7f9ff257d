"""The audit queries' parameters and what a share's record says about its consent."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from services.reporting.audit.queries import After, InvertedPeriod, LedgerRow, Period, share_record
from shared.events.consent import AgencyCategory, Purpose


def test_a_period_is_whole_utc_days_both_ends_included():
    term = Period(date(2026, 9, 1), date(2026, 12, 18))
    assert term.lower == datetime(2026, 9, 1, tzinfo=UTC) and term.upper == datetime(2026, 12, 19, tzinfo=UTC)


def test_an_inverted_period_is_refused_saying_so():
    with pytest.raises(InvertedPeriod, match="from 2026-12-18 is after to 2026-09-01"):
        Period(date(2026, 12, 18), date(2026, 9, 1))


def test_a_cursor_round_trips_and_a_forged_one_is_refused():
    after = After(datetime(2026, 10, 2, tzinfo=UTC), 42)
    assert After.from_cursor(after.cursor()) == after
    for forged in ({"t": "yesterday", "s": 1}, {"t": "2026-10-02T00:00:00", "s": 1}, {"s": "1"},
                   {"t": after.cursor()["t"], "s": "1"}):
        with pytest.raises(ValueError, match="not an audit cursor"):
            After.from_cursor(forged)


def test_every_agency_category_has_a_consent_purpose():
    assert {Purpose.for_agency(c) for c in AgencyCategory} == {p for p in Purpose if p.value.startswith("share_")}


def _decision(action: str, when: str) -> dict[str, object]:
    return {"action": action, "consent_id": str(uuid.uuid4()), "occurred_at": when, "actor": "office-2", "purpose": "share_camhs"}


@pytest.mark.parametrize(("decisions", "in_force"), [
    ([("consent_granted", "2026-09-01T00:00:00.000000Z")], True),
    ([("consent_granted", "2026-09-01T00:00:00.000000Z"), ("consent_withdrawn", "2026-09-30T00:00:00.000000Z")], False),
    ([("consent_granted", "2026-09-01T00:00:00.000000Z"), ("consent_withdrawn", "2026-10-05T00:00:00.000000Z")], True),
    ([("consent_granted", "2026-10-05T00:00:00.000000Z")], False),
    ([], False),
])
def test_a_share_rested_on_consent_only_if_the_last_decision_before_it_was_a_grant(decisions, in_force):
    share = {"event_id": str(uuid.uuid4()), "action": "share", "occurred_at": "2026-10-02T10:00:00.000000Z",
             "source": "/flourish/reporting"}
    # Ledger order (seq) need not be time order: the consent topic may be consumed later.
    consent = [(10 + n, "ab" * 32, _decision(action, when)) for n, (action, when) in enumerate(decisions)]
    record = share_record(LedgerRow(5, "cd" * 32, datetime(2026, 10, 2, 10, tzinfo=UTC), share, consent=consent))
    assert record.consent_in_force is in_force
