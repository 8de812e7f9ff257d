"""The consent ledger's rules and the sharing decision, as pure functions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.consent.domain import ledger
from services.consent.domain.errors import (
    DecisionInFuture,
    DecisionOutOfOrder,
    InvalidValidity,
    NotASharingPurpose,
    NothingToWithdraw,
)
from services.consent.domain.ledger import ConsentRecord, ConsentStatus, decide_sharing, taking_part
from shared.events.consent import AgencyCategory, ConsentMethod, DataKind, LawfulBasis, Purpose

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
PUPIL = uuid.uuid4()
SEALED = "fl1.c2VhbGVkLXBhcmVudC1uYW1lLXBsYWNlaG9sZGVyLXRleHQ"


def record(purpose: Purpose = Purpose.SHARE_CAMHS) -> ConsentRecord:
    return ConsentRecord(pupil_id=PUPIL, purpose=purpose)


def granted(rec: ConsentRecord, at: datetime = NOW, **kwargs) -> ConsentRecord:  # type: ignore[no-untyped-def]
    args = {"consent_id": uuid.uuid4(), "method": ConsentMethod.PAPER, "given_by": SEALED, "evidence_reference": None,
            "covers": ledger.ALL_KINDS, "recorded_by": "staff-1", "decided_at": at, "valid_until": None, "now": NOW}
    args.update(kwargs)
    return rec.apply(ledger.grant(rec, **args))


def withdrawn(rec: ConsentRecord, at: datetime = NOW) -> ConsentRecord:
    return rec.apply(ledger.withdraw(rec, withdrawal_id=uuid.uuid4(), method=ConsentMethod.EMAIL, given_by=SEALED,
                                     evidence_reference=None, recorded_by="staff-1", withdrawn_at=at, now=NOW))


def basis(rec: ConsentRecord, valid_for: timedelta = timedelta(days=7), **kwargs) -> ConsentRecord:  # type: ignore[no-untyped-def]
    args = {"basis_id": uuid.uuid4(), "basis": LawfulBasis.VITAL_INTERESTS, "reason": SEALED,
            "policy_reference": "Child protection policy 4.2", "covers": frozenset({DataKind.REPORT}),
            "decided_by": "dsl-1", "decided_at": NOW, "valid_until": NOW + valid_for, "now": NOW}
    args.update(kwargs)
    return rec.apply(ledger.record_basis(rec, **args))


def test_no_record_is_a_deny() -> None:
    decision = decide_sharing(None, AgencyCategory.CAMHS, DataKind.REPORT, NOW)
    assert not decision.allow and decision.reason == "no_record" and decision.record_version == 0


def test_a_grant_allows_and_names_the_record_and_version_it_rests_on() -> None:
    rec = granted(record())
    decision = decide_sharing(rec, AgencyCategory.CAMHS, DataKind.PROFILE, NOW)
    assert decision.allow and decision.lawful_basis is LawfulBasis.CONSENT and decision.consent_obtained
    assert decision.record_id == rec.consent_id and decision.record_version == 1


def test_withdrawal_flips_the_next_decision_to_deny() -> None:
    rec = withdrawn(granted(record()), NOW + timedelta(minutes=1))
    decision = decide_sharing(rec, AgencyCategory.CAMHS, DataKind.REPORT, NOW + timedelta(minutes=2))
    assert not decision.allow and decision.reason == "consent_withdrawn" and decision.record_version == 2


def test_an_expired_grant_is_a_deny() -> None:
    rec = granted(record(), valid_until=NOW + timedelta(days=1))
    assert decide_sharing(rec, AgencyCategory.CAMHS, DataKind.REPORT, NOW + timedelta(hours=23)).allow
    late = decide_sharing(rec, AgencyCategory.CAMHS, DataKind.REPORT, NOW + timedelta(days=1))
    assert not late.allow and late.reason == "consent_expired"


def test_a_grant_covers_only_the_kinds_of_data_it_names() -> None:
    rec = granted(record(), covers=frozenset({DataKind.PROFILE}))
    assert decide_sharing(rec, AgencyCategory.CAMHS, DataKind.PROFILE, NOW).allow
    assert decide_sharing(rec, AgencyCategory.CAMHS, DataKind.ACTION_PLAN, NOW).reason == "kind_of_data_not_covered"


def test_withdrawing_what_was_never_granted_is_refused() -> None:
    with pytest.raises(NothingToWithdraw):
        withdrawn(record())
    refused = record().apply(ledger.refuse(record(), consent_id=uuid.uuid4(), method=ConsentMethod.VERBAL,
                                           given_by=SEALED, evidence_reference=None, recorded_by="s", decided_at=NOW,
                                           now=NOW))
    with pytest.raises(NothingToWithdraw):
        withdrawn(refused)
    with pytest.raises(NothingToWithdraw):
        withdrawn(withdrawn(granted(record())))


def test_a_decision_dated_in_the_future_or_before_the_latest_one_is_refused() -> None:
    with pytest.raises(DecisionInFuture):
        granted(record(), at=NOW + timedelta(hours=1))
    assert granted(record(), at=NOW + timedelta(seconds=30)).status is ConsentStatus.GRANTED  # clock skew
    later = granted(record(), at=NOW)
    with pytest.raises(DecisionOutOfOrder):
        withdrawn(later, NOW - timedelta(days=1))


def test_valid_until_must_follow_the_decision() -> None:
    with pytest.raises(InvalidValidity):
        granted(record(), valid_until=NOW)
    with pytest.raises(InvalidValidity):
        granted(record(), covers=frozenset())


def test_another_lawful_basis_allows_without_consent_and_says_consent_was_not_obtained() -> None:
    rec = basis(record(Purpose.SHARE_SOCIAL_CARE))
    decision = decide_sharing(rec, AgencyCategory.SOCIAL_CARE, DataKind.REPORT, NOW + timedelta(hours=1))
    assert decision.allow and decision.lawful_basis is LawfulBasis.VITAL_INTERESTS and not decision.consent_obtained
    assert not decide_sharing(rec, AgencyCategory.SOCIAL_CARE, DataKind.PROFILE, NOW).allow
    assert not decide_sharing(rec, AgencyCategory.SOCIAL_CARE, DataKind.REPORT, NOW + timedelta(days=8)).allow


def test_consent_is_preferred_over_another_basis_when_both_are_in_force() -> None:
    rec = basis(granted(record(Purpose.SHARE_SOCIAL_CARE)), decided_at=NOW + timedelta(seconds=1))
    decision = decide_sharing(rec, AgencyCategory.SOCIAL_CARE, DataKind.REPORT, NOW + timedelta(minutes=1))
    assert decision.consent_obtained and decision.lawful_basis is LawfulBasis.CONSENT


def test_a_lawful_basis_is_for_sharing_only_is_not_consent_and_is_reviewed_within_a_year() -> None:
    with pytest.raises(NotASharingPurpose):
        basis(record(Purpose.INTERVENTIONS))
    with pytest.raises(NotASharingPurpose):
        basis(record(), basis=LawfulBasis.CONSENT)
    with pytest.raises(InvalidValidity):
        basis(record(), valid_for=timedelta(days=400))


def test_opt_out_purposes_are_in_force_until_a_parent_says_no() -> None:
    rec = record(Purpose.INTERVENTIONS)
    assert taking_part(None) and taking_part(rec)
    refused = rec.apply(ledger.refuse(rec, consent_id=uuid.uuid4(), method=ConsentMethod.EMAIL, given_by=SEALED,
                                      evidence_reference=None, recorded_by="s", decided_at=NOW, now=NOW))
    assert not taking_part(refused)


def test_purposes_map_to_agency_categories_both_ways() -> None:
    for category in AgencyCategory:
        assert Purpose.for_agency(category).agency_category is category
    assert Purpose.INTERVENTIONS.opt_out and not Purpose.SHARE_OTHER.opt_out
