"""The consent ledger: one record per pupil and purpose, the decisions that change it, and the
sharing decision that rests on it.

A record is the fold of its events (ConsentGranted, ConsentRefused, ConsentWithdrawn,
LawfulBasisRecorded); its version is the stream version. Everything here is pure: the handler
seals the personal fields before they reach the domain, which treats them as opaque text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from services.consent.domain.errors import (
    DecisionInFuture,
    DecisionOutOfOrder,
    InvalidValidity,
    NotASharingPurpose,
    NothingToWithdraw,
)
from shared.events.consent import (
    AgencyCategory,
    ConsentGranted,
    ConsentMethod,
    ConsentRefused,
    ConsentWithdrawn,
    DataKind,
    LawfulBasis,
    LawfulBasisRecorded,
    Purpose,
)
from shared.events.registry import Event

# Clocks of staff devices and servers differ a little; a decision "made" further ahead than this
# is a typo in the date, not skew.
CLOCK_SKEW = timedelta(minutes=2)
# A safeguarding basis is reviewed, not left standing: it may not be recorded for longer.
MAX_BASIS_VALIDITY = timedelta(days=366)

ALL_KINDS: frozenset[DataKind] = frozenset(DataKind)


class ConsentStatus(StrEnum):
    NONE = "none"
    GRANTED = "granted"
    REFUSED = "refused"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class ActiveBasis:
    """A lawful basis other than consent on which sharing may rest until `valid_until`."""

    basis_id: UUID
    basis: LawfulBasis
    decided_by: str
    policy_reference: str
    decided_at: datetime
    valid_until: datetime
    covers: frozenset[DataKind]


@dataclass(frozen=True)
class ConsentRecord:
    pupil_id: UUID
    purpose: Purpose
    version: int = 0
    status: ConsentStatus = ConsentStatus.NONE
    consent_id: UUID | None = None  # the decision the status comes from
    decided_at: datetime | None = None
    valid_until: datetime | None = None
    covers: frozenset[DataKind] = frozenset()
    latest_at: datetime | None = None  # the latest decision of any kind (ordering rule)
    basis: ActiveBasis | None = None

    def apply(self, event: Event) -> ConsentRecord:
        """The record after one of its events (the fold that rebuilds it from history)."""
        latest = _latest(self.latest_at, _moment(event))
        if isinstance(event, ConsentGranted):
            return replace(self, version=event.record_version, status=ConsentStatus.GRANTED,
                           consent_id=event.consent_id, decided_at=event.decided_at, valid_until=event.valid_until,
                           covers=frozenset(event.covers), latest_at=latest)
        if isinstance(event, ConsentRefused):
            return replace(self, version=event.record_version, status=ConsentStatus.REFUSED,
                           consent_id=event.consent_id, decided_at=event.decided_at, valid_until=None,
                           covers=frozenset(), latest_at=latest)
        if isinstance(event, ConsentWithdrawn):
            return replace(self, version=event.record_version, status=ConsentStatus.WITHDRAWN,
                           consent_id=event.withdrawal_id, decided_at=event.withdrawn_at, valid_until=None,
                           covers=frozenset(), latest_at=latest)
        if isinstance(event, LawfulBasisRecorded):
            basis = ActiveBasis(event.basis_id, event.basis, event.decided_by, event.policy_reference,
                                event.decided_at, event.valid_until, frozenset(event.covers))
            return replace(self, version=event.record_version, basis=basis, latest_at=latest)
        raise TypeError(f"{type(event).__name__} is not an event of a consent record")


def _moment(event: Event) -> datetime:
    for name in ("decided_at", "withdrawn_at"):
        value = getattr(event, name, None)
        if isinstance(value, datetime):
            return value
    raise TypeError(f"{type(event).__name__} has no decision time")


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


# --- Decisions --------------------------------------------------------------------------------


def _check_time(record: ConsentRecord, decided_at: datetime, now: datetime) -> None:
    if decided_at.tzinfo is None:
        raise DecisionInFuture("a decision time must carry its time zone")
    if decided_at > now + CLOCK_SKEW:
        raise DecisionInFuture("a decision cannot be dated in the future")
    if record.latest_at is not None and decided_at < record.latest_at:
        raise DecisionOutOfOrder("a later decision is already on this record; a decision cannot be back-dated before it")


def grant(
    record: ConsentRecord, *, consent_id: UUID, method: ConsentMethod, given_by: str, evidence_reference: str | None,
    covers: frozenset[DataKind], recorded_by: str, decided_at: datetime, valid_until: datetime | None, now: datetime,
) -> ConsentGranted:
    _check_time(record, decided_at, now)
    if valid_until is not None and valid_until <= decided_at:
        raise InvalidValidity("valid_until must come after the decision")
    if not covers:
        raise InvalidValidity("consent must cover at least one kind of data")
    return ConsentGranted(
        consent_id=consent_id, pupil_id=record.pupil_id, purpose=record.purpose, record_version=record.version + 1,
        method=method, given_by=given_by, evidence_reference=evidence_reference, covers=sorted(covers),
        recorded_by=recorded_by, decided_at=decided_at, valid_until=valid_until,
    )


def refuse(
    record: ConsentRecord, *, consent_id: UUID, method: ConsentMethod, given_by: str, evidence_reference: str | None,
    recorded_by: str, decided_at: datetime, now: datetime,
) -> ConsentRefused:
    _check_time(record, decided_at, now)
    return ConsentRefused(
        consent_id=consent_id, pupil_id=record.pupil_id, purpose=record.purpose, record_version=record.version + 1,
        method=method, given_by=given_by, evidence_reference=evidence_reference, recorded_by=recorded_by,
        decided_at=decided_at,
    )


def withdraw(
    record: ConsentRecord, *, withdrawal_id: UUID, method: ConsentMethod, given_by: str,
    evidence_reference: str | None, recorded_by: str, withdrawn_at: datetime, now: datetime,
) -> ConsentWithdrawn:
    if record.status is not ConsentStatus.GRANTED or record.consent_id is None:
        raise NothingToWithdraw(f"there is no granted consent for {record.purpose.value} to withdraw")
    _check_time(record, withdrawn_at, now)
    return ConsentWithdrawn(
        consent_id=record.consent_id, withdrawal_id=withdrawal_id, pupil_id=record.pupil_id, purpose=record.purpose,
        record_version=record.version + 1, method=method, given_by=given_by, evidence_reference=evidence_reference,
        recorded_by=recorded_by, withdrawn_at=withdrawn_at,
    )


def record_basis(
    record: ConsentRecord, *, basis_id: UUID, basis: LawfulBasis, reason: str, policy_reference: str,
    covers: frozenset[DataKind], decided_by: str, decided_at: datetime, valid_until: datetime, now: datetime,
) -> LawfulBasisRecorded:
    category = record.purpose.agency_category
    if category is None:
        raise NotASharingPurpose("a lawful basis for sharing concerns an agency category")
    if basis is LawfulBasis.CONSENT:
        raise NotASharingPurpose("consent is recorded as a consent decision, not as another lawful basis")
    _check_time(record, decided_at, now)
    if valid_until <= decided_at:
        raise InvalidValidity("valid_until must come after the decision")
    if valid_until - decided_at > MAX_BASIS_VALIDITY:
        raise InvalidValidity("a lawful basis other than consent may stand for at most a year before review")
    if not covers:
        raise InvalidValidity("the basis must cover at least one kind of data")
    return LawfulBasisRecorded(
        basis_id=basis_id, pupil_id=record.pupil_id, purpose=record.purpose, agency_category=category,
        record_version=record.version + 1, basis=basis, reason=reason, policy_reference=policy_reference,
        covers=sorted(covers), decided_by=decided_by, decided_at=decided_at, valid_until=valid_until,
    )


# --- May this be shared? ----------------------------------------------------------------------


class DenyReason(StrEnum):
    NO_RECORD = "no_record"
    REFUSED = "consent_refused"
    WITHDRAWN = "consent_withdrawn"
    EXPIRED = "consent_expired"
    NOT_COVERED = "kind_of_data_not_covered"
    PUPIL_ERASED = "pupil_erased"


@dataclass(frozen=True)
class SharingDecision:
    """Allow or deny, and exactly which record (and version) the answer rests on."""

    allow: bool
    agency_category: AgencyCategory
    data_kind: DataKind
    reason: str
    lawful_basis: LawfulBasis | None
    consent_obtained: bool
    record_id: UUID | None
    record_version: int
    valid_until: datetime | None
    policy_reference: str | None = None  # the policy or statute, when the basis is not consent


def decide_sharing(
    record: ConsentRecord | None, category: AgencyCategory, kind: DataKind, now: datetime
) -> SharingDecision:
    """Fail closed: allow only on consent in force that covers the kind of data, or on another
    lawful basis in force that covers it; anything else (no record, expired, refused, withdrawn,
    not covered) is a deny."""
    version = record.version if record else 0

    def deny(reason: DenyReason | str, record_id: UUID | None = None) -> SharingDecision:
        return SharingDecision(False, category, kind, str(reason), None, False, record_id, version, None)

    if record is None or (record.status is ConsentStatus.NONE and record.basis is None):
        return deny(DenyReason.NO_RECORD)
    in_force = record.status is ConsentStatus.GRANTED and (record.valid_until is None or record.valid_until > now)
    if in_force and kind in record.covers:
        return SharingDecision(True, category, kind, "consent_in_force", LawfulBasis.CONSENT, True,
                               record.consent_id, version, record.valid_until)
    basis = record.basis
    if basis is not None and basis.valid_until > now and basis.decided_at <= now and kind in basis.covers:
        consent_obtained = False
        return SharingDecision(True, category, kind, f"{basis.basis.value}_in_force", basis.basis, consent_obtained,
                               basis.basis_id, version, basis.valid_until, basis.policy_reference)
    if record.status is ConsentStatus.GRANTED:
        if record.valid_until is not None and record.valid_until <= now:
            return deny(DenyReason.EXPIRED, record.consent_id)
        return deny(DenyReason.NOT_COVERED, record.consent_id)
    if record.status is ConsentStatus.REFUSED:
        return deny(DenyReason.REFUSED, record.consent_id)
    if record.status is ConsentStatus.WITHDRAWN:
        return deny(DenyReason.WITHDRAWN, record.consent_id)
    return deny(DenyReason.NO_RECORD)


def taking_part(record: ConsentRecord | None) -> bool:
    """Opt-out purposes: in force unless a parent refused or withdrew (as the letter promises)."""
    return record is None or record.status not in (ConsentStatus.REFUSED, ConsentStatus.WITHDRAWN)
