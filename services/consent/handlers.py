"""One function per command of the consent service: load, decide (domain), seal, append, project.

Every handler runs inside the caller's transaction: the events, their outbox rows and the read
models they change commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.consent.decisions import DecisionReader
from services.consent.domain import ledger
from services.consent.domain.errors import DecisionInFuture, PupilAlreadyErased, UnknownPupil
from services.consent.domain.retention import RetentionPeriod, RetentionPolicy, effective_policies
from services.consent.projections import load_record, on_consent_event, record_from_row, touch_activity
from services.consent.tables import (
    consent_decisions,
    erasures,
    family_contacts,
    kernel,
    opt_out_retention,
    pupils,
    retention_policies,
)
from shared.api import forget_stored_answers
from shared.audit import AdminAction, record_admin_action
from shared.auth import Principal, ensure_scope
from shared.datakeys import DataKey, DataKeyVault
from shared.events.consent import (
    AgencyCategory,
    ConsentMethod,
    DataCategory,
    DataKind,
    ErasureReason,
    LawfulBasis,
    PupilErased,
    Purpose,
    RetentionClock,
    RetentionPolicySet,
)
from shared.events.envelope import Envelope
from shared.events.registry import Event
from shared.problems import Forbidden
from shared.store.emission import emit
from shared.store.event_store import EventStore
from shared.tenancy import across_trusts

# Field names personal data is sealed under (the AES-GCM associated data names them).
GIVEN_BY = "consent.given_by"
EVIDENCE = "consent.evidence_reference"
REASON = "consent.lawful_basis_reason"
DATE_OF_BIRTH = "pupil.date_of_birth"
CONTACT_EMAIL = "consent.family_contact_email"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ConsentDeps:
    """What the handlers need besides the connection: the event store, the data-key vault, a clock."""

    store: EventStore
    vault: DataKeyVault
    clock: Callable[[], datetime] = utcnow


@dataclass(frozen=True)
class Pupil:
    pupil_id: UUID
    trust_id: UUID
    academy_id: UUID
    erased_at: datetime | None


# --- Pupils and scope ---------------------------------------------------------------------------


async def find_pupil(conn: AsyncConnection, pupil_id: UUID, *, for_update: bool = False) -> Pupil | None:
    query = select(pupils.c.pupil_id, pupils.c.trust_id, pupils.c.academy_id, pupils.c.erased_at).where(
        pupils.c.pupil_id == pupil_id
    )
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    return None if row is None else Pupil(row.pupil_id, row.trust_id, row.academy_id, row.erased_at)


def ensure_pupil_scope(principal: Principal, pupil: Pupil) -> None:
    """Staff reach pupils of their academies (trust roles, services included: of their trust)."""
    ensure_scope(principal, pupil.trust_id, pupil.academy_id)


async def pupil_in_scope(conn: AsyncConnection, principal: Principal, pupil_id: UUID, *,
                         allow_erased: bool = False, for_update: bool = False) -> Pupil:
    pupil = await find_pupil(conn, pupil_id, for_update=for_update)
    if pupil is None:
        raise UnknownPupil(f"no pupil {pupil_id} is on the roster")
    ensure_pupil_scope(principal, pupil)
    if pupil.erased_at is not None and not allow_erased:
        raise PupilAlreadyErased(f"pupil {pupil_id} was erased")
    return pupil


def record_stream(pupil_id: UUID, purpose: Purpose) -> str:
    return f"consent-{pupil_id}-{purpose.value}"


def pupil_stream(pupil_id: UUID) -> str:
    return f"pupil-{pupil_id}"


# --- Consent decisions --------------------------------------------------------------------------


@dataclass(frozen=True)
class GivenBy:
    name: str
    relationship: str
    email: str | None = None  # the family's contact for notices of shares (family_contacts)


@dataclass(frozen=True)
class DecisionResult:
    decision_id: UUID
    consent_id: UUID | None
    pupil_id: UUID
    purpose: Purpose
    kind: str
    record_version: int
    stream_id: str

    def body(self) -> dict[str, Any]:
        # What the API answers (and the idempotency table keeps): ids only, nothing personal.
        return {"decision_id": str(self.decision_id), "consent_id": str(self.consent_id) if self.consent_id else None,
                "pupil_id": str(self.pupil_id), "purpose": self.purpose.value, "kind": self.kind,
                "record_version": self.record_version, "stream_id": self.stream_id}


def _seal_parent(key: DataKey, given_by: GivenBy, evidence: str | None) -> tuple[str, str | None]:
    sealed_by = key.seal_json({"name": given_by.name, "relationship": given_by.relationship}, GIVEN_BY)
    return sealed_by, (key.seal_text(evidence, EVIDENCE) if evidence else None)


async def _append_decision(conn: AsyncConnection, deps: ConsentDeps, pupil: Pupil, record: ledger.ConsentRecord,
                           event: Event) -> None:
    (envelope,) = await emit(conn, deps.store, record_stream(pupil.pupil_id, record.purpose), [event],
                             trust_id=pupil.trust_id, academy_id=pupil.academy_id, expected_version=record.version)
    await on_consent_event(conn, envelope)


async def record_decision(
    conn: AsyncConnection, deps: ConsentDeps, principal: Principal, pupil_id: UUID, *, purpose: Purpose,
    granted: bool, given_by: GivenBy, method: ConsentMethod, evidence_reference: str | None, decided_at: datetime,
    valid_until: datetime | None, covers: frozenset[DataKind] | None,
) -> DecisionResult:
    pupil = await pupil_in_scope(conn, principal, pupil_id, for_update=True)
    record = await load_record(conn, pupil_id, purpose)
    key = await deps.vault.key_for(conn, pupil.trust_id, pupil_id)
    sealed_by, sealed_evidence = _seal_parent(key, given_by, evidence_reference)
    decision_id = uuid4()
    event: Event
    if granted:
        event = ledger.grant(record, consent_id=decision_id, method=method, given_by=sealed_by,
                             evidence_reference=sealed_evidence, covers=covers or ledger.ALL_KINDS,
                             recorded_by=principal.subject, decided_at=decided_at, valid_until=valid_until,
                             now=deps.clock())
    else:
        event = ledger.refuse(record, consent_id=decision_id, method=method, given_by=sealed_by,
                              evidence_reference=sealed_evidence, recorded_by=principal.subject,
                              decided_at=decided_at, now=deps.clock())
    await _append_decision(conn, deps, pupil, record, event)
    if given_by.email:
        await _record_contact(conn, deps, pupil, key, given_by.email, decision_id, principal.subject)
    return DecisionResult(decision_id, decision_id, pupil_id, purpose, "granted" if granted else "refused",
                          record.version + 1, record_stream(pupil_id, purpose))


async def withdraw_consent(
    conn: AsyncConnection, deps: ConsentDeps, principal: Principal, pupil_id: UUID, *, purpose: Purpose,
    given_by: GivenBy, method: ConsentMethod, evidence_reference: str | None, withdrawn_at: datetime,
) -> DecisionResult:
    pupil = await pupil_in_scope(conn, principal, pupil_id, for_update=True)
    record = await load_record(conn, pupil_id, purpose)
    key = await deps.vault.key_for(conn, pupil.trust_id, pupil_id)
    sealed_by, sealed_evidence = _seal_parent(key, given_by, evidence_reference)
    withdrawal_id = uuid4()
    event = ledger.withdraw(record, withdrawal_id=withdrawal_id, method=method, given_by=sealed_by,
                            evidence_reference=sealed_evidence, recorded_by=principal.subject,
                            withdrawn_at=withdrawn_at, now=deps.clock())
    await _append_decision(conn, deps, pupil, record, event)
    if given_by.email:
        await _record_contact(conn, deps, pupil, key, given_by.email, withdrawal_id, principal.subject)
    return DecisionResult(withdrawal_id, event.consent_id, pupil_id, purpose, "withdrawn", record.version + 1,
                          record_stream(pupil_id, purpose))


async def record_lawful_basis(
    conn: AsyncConnection, deps: ConsentDeps, principal: Principal, pupil_id: UUID, *, category: AgencyCategory,
    basis: LawfulBasis, reason: str, policy_reference: str, covers: frozenset[DataKind] | None,
    decided_at: datetime, valid_until: datetime,
) -> DecisionResult:
    pupil = await pupil_in_scope(conn, principal, pupil_id, for_update=True)
    purpose = Purpose.for_agency(category)
    record = await load_record(conn, pupil_id, purpose)
    key = await deps.vault.key_for(conn, pupil.trust_id, pupil_id)
    basis_id = uuid4()
    event = ledger.record_basis(record, basis_id=basis_id, basis=basis, reason=key.seal_text(reason, REASON),
                                policy_reference=policy_reference, covers=covers or ledger.ALL_KINDS,
                                decided_by=principal.subject, decided_at=decided_at, valid_until=valid_until,
                                now=deps.clock())
    await _append_decision(conn, deps, pupil, record, event)
    return DecisionResult(basis_id, None, pupil_id, purpose, "lawful_basis", record.version + 1,
                          record_stream(pupil_id, purpose))


# --- The family's contact (where they are told before a share) ----------------------------------


async def _record_contact(conn: AsyncConnection, deps: ConsentDeps, pupil: Pupil, key: DataKey, email: str,
                          decision_id: UUID | None, recorded_by: str) -> None:
    values = {"trust_id": pupil.trust_id, "academy_id": pupil.academy_id,
              "email_sealed": key.seal_text(email, CONTACT_EMAIL), "decision_id": decision_id,
              "recorded_by": recorded_by, "recorded_at": deps.clock()}
    await conn.execute(insert(family_contacts).values(pupil_id=pupil.pupil_id, **values)
                       .on_conflict_do_update(index_elements=["pupil_id"], set_=values))


async def set_family_contact(conn: AsyncConnection, deps: ConsentDeps, principal: Principal, pupil_id: UUID,
                             email: str) -> dict[str, Any]:
    """Record or change the family's contact email (sealed); the answer repeats nothing personal."""
    pupil = await pupil_in_scope(conn, principal, pupil_id, for_update=True)
    key = await deps.vault.key_for(conn, pupil.trust_id, pupil_id)
    await _record_contact(conn, deps, pupil, key, email, None, principal.subject)
    return {"pupil_id": str(pupil_id), "email_recorded": True, "recorded_at": deps.clock().isoformat()}


async def remove_family_contact(conn: AsyncConnection, principal: Principal, pupil_id: UUID) -> None:
    await pupil_in_scope(conn, principal, pupil_id, for_update=True)
    await conn.execute(delete(family_contacts).where(family_contacts.c.pupil_id == pupil_id))


async def family_contact(conn: AsyncConnection, principal: Principal, pupil_id: UUID) -> dict[str, Any]:
    """The contact as stored, still sealed (a service opens it with the pupil's key, whose release is
    audited): 404 when none is recorded, 410 once the pupil is erased."""
    pupil = await pupil_in_scope(conn, principal, pupil_id)
    row = (await conn.execute(select(family_contacts).where(family_contacts.c.pupil_id == pupil_id))).first()
    if row is None:
        raise UnknownPupil("no contact email is recorded for this pupil's family")
    return {"pupil_id": str(pupil.pupil_id), "email_sealed": row.email_sealed, "field": CONTACT_EMAIL,
            "recorded_at": row.recorded_at.isoformat()}


# --- Sharing decisions --------------------------------------------------------------------------

async def sharing_decision(
    reader: DecisionReader, principal: Principal, pupil_id: UUID, category: AgencyCategory, kind: DataKind,
    now: datetime,
) -> tuple[Pupil, ledger.SharingDecision]:
    """One indexed read of the pupil and their record for this agency category, then the rule."""
    purpose = Purpose.for_agency(category)
    row = await reader.read(pupil_id, purpose.value)
    if row is None:
        raise UnknownPupil(f"no pupil {pupil_id} is on the roster")
    pupil = Pupil(pupil_id, row.trust_id, row.academy_id, row.erased_at)
    ensure_pupil_scope(principal, pupil)
    if pupil.erased_at is not None:
        return pupil, ledger.SharingDecision(False, category, kind, ledger.DenyReason.PUPIL_ERASED.value, None, False,
                                             None, 0, None)
    record = record_from_row(row if row.version is not None else None, pupil_id, purpose)
    return pupil, ledger.decide_sharing(record, category, kind, now)


# --- Retention ----------------------------------------------------------------------------------


async def academy_trust(conn: AsyncConnection, academy_id: UUID) -> UUID | None:
    """The trust an academy belongs to, as far as this service has seen (roster or policies)."""
    known = await conn.scalar(select(pupils.c.trust_id).where(pupils.c.academy_id == academy_id).limit(1))
    if known is None:
        known = await conn.scalar(
            select(retention_policies.c.trust_id).where(retention_policies.c.academy_id == academy_id).limit(1)
        )
    return known


async def ensure_academy_scope(conn: AsyncConnection, principal: Principal, academy_id: UUID) -> UUID:
    async with across_trusts(conn):  # whose academy it is, is a question across trusts
        trust_id = await academy_trust(conn, academy_id)
    if trust_id is not None and trust_id != principal.trust_id:
        raise Forbidden("this academy is outside your trust")
    ensure_scope(principal, principal.trust_id, academy_id)
    return principal.trust_id


async def academy_policies(conn: AsyncConnection, trust_id: UUID, academy_id: UUID) -> list[RetentionPolicy]:
    rows = await conn.execute(select(retention_policies).where(
        retention_policies.c.trust_id == trust_id, retention_policies.c.academy_id == academy_id))
    own = [
        RetentionPolicy(r.policy_id, DataCategory(r.data_category), RetentionClock(r.counted_from),
                        RetentionPeriod(r.period_years, r.period_months, r.period_days))
        for r in rows
    ]
    return effective_policies(own)


async def set_retention_policy(
    conn: AsyncConnection, deps: ConsentDeps, principal: Principal, academy_id: UUID, *, category: DataCategory,
    counted_from: RetentionClock, period: RetentionPeriod,
) -> dict[str, Any]:
    trust_id = await ensure_academy_scope(conn, principal, academy_id)
    event = RetentionPolicySet(
        policy_id=uuid4(), academy_id=academy_id, data_category=category, counted_from=counted_from,
        period_years=period.years, period_months=period.months, period_days=period.days,
        set_by=principal.subject, set_at=deps.clock(),
    )
    await emit(conn, deps.store, f"retention-{academy_id}", [event], trust_id=trust_id, academy_id=academy_id)
    values = {"trust_id": trust_id, "policy_id": event.policy_id, "counted_from": counted_from.value,
              "period_years": period.years, "period_months": period.months, "period_days": period.days,
              "set_by": principal.subject, "set_at": event.set_at}
    await conn.execute(insert(retention_policies).values(academy_id=academy_id, data_category=category.value, **values)
                       .on_conflict_do_update(index_elements=["academy_id", "data_category"], set_=values))
    return policy_body(RetentionPolicy(event.policy_id, category, counted_from, period), academy_id)


def policy_body(policy: RetentionPolicy, academy_id: UUID) -> dict[str, Any]:
    return {"policy_id": str(policy.policy_id), "academy_id": str(academy_id),
            "data_category": policy.data_category.value, "counted_from": policy.counted_from.value,
            "period": {"years": policy.period.years, "months": policy.period.months, "days": policy.period.days},
            "description": f"{policy.period.describe()} from the pupil's {policy.counted_from.value.replace('_', ' ')}",
            "is_default": policy.is_default}


async def set_retention_clock(
    conn: AsyncConnection, deps: ConsentDeps, principal: Principal, pupil_id: UUID, *,
    date_of_birth: date | None, last_activity_on: date | None, case_closed_on: date | None,
) -> dict[str, Any]:
    pupil = await pupil_in_scope(conn, principal, pupil_id, for_update=True)
    today = deps.clock().date()
    for name, value in (("date_of_birth", date_of_birth), ("last_activity_on", last_activity_on),
                        ("case_closed_on", case_closed_on)):
        if value is not None and value > today:
            raise DecisionInFuture(f"{name} cannot be in the future")
    values: dict[str, Any] = {}
    if date_of_birth is not None:
        key = await deps.vault.key_for(conn, pupil.trust_id, pupil_id)
        values["date_of_birth_sealed"] = key.seal_text(date_of_birth.isoformat(), DATE_OF_BIRTH)
    if case_closed_on is not None:
        values["case_closed_on"] = case_closed_on
    if values:
        await conn.execute(update(pupils).where(pupils.c.pupil_id == pupil_id).values(**values))
    if last_activity_on is not None:
        await touch_activity(conn, pupil.trust_id, pupil_id, last_activity_on)
    return {"pupil_id": str(pupil_id), "date_of_birth_recorded": date_of_birth is not None,
            "case_closed_on": case_closed_on.isoformat() if case_closed_on else None,
            "last_activity_on": last_activity_on.isoformat() if last_activity_on else None}


async def read_date_of_birth(conn: AsyncConnection, vault: DataKeyVault, trust_id: UUID, pupil_id: UUID,
                             sealed: str | None) -> date | None:
    if sealed is None:
        return None
    key = await vault.key_for(conn, trust_id, pupil_id, create=False)
    return date.fromisoformat(key.open_text(sealed, DATE_OF_BIRTH))


# --- Erasure ------------------------------------------------------------------------------------


async def erase(
    conn: AsyncConnection, deps: ConsentDeps, pupil: Pupil, *, reason: ErasureReason, requested_by: str,
    cause: Envelope[Event] | None = None,
) -> dict[str, Any]:
    """Crypto-shred the pupil: destroy their data key (every sealed copy, Kafka's included, is
    unreadable from this commit on), redact what this service holds, keep a non-personal record,
    and tell every service (PupilErased). `cause`: the event that led to it (RetentionExpired)."""
    if pupil.erased_at is not None:
        raise PupilAlreadyErased(f"pupil {pupil.pupil_id} was already erased")
    now = deps.clock()
    await deps.vault.destroy(conn, pupil.trust_id, pupil.pupil_id, at=now)
    await conn.execute(update(pupils).where(pupils.c.pupil_id == pupil.pupil_id).values(
        date_of_birth_sealed=None, enrolled_on=None, left_on=None, last_activity_on=None, case_closed_on=None,
        erased_at=now))
    await conn.execute(update(consent_decisions).where(consent_decisions.c.pupil_id == pupil.pupil_id).values(
        given_by_sealed=None, evidence_sealed=None, reason_sealed=None))
    await conn.execute(delete(family_contacts).where(family_contacts.c.pupil_id == pupil.pupil_id))
    await conn.execute(update(opt_out_retention).where(opt_out_retention.c.pupil_id == pupil.pupil_id).values(
        explanation_sealed=None))
    await forget_stored_answers(conn, kernel.idempotency, pupil.trust_id, pupil.pupil_id)
    erasure_id = uuid4()
    await conn.execute(insert(erasures).values(
        erasure_id=erasure_id, pupil_id=pupil.pupil_id, trust_id=pupil.trust_id, academy_id=pupil.academy_id,
        reason=reason.value, requested_by=requested_by, key_destroyed=True, erased_at=now))
    event = PupilErased(pupil_id=pupil.pupil_id, erasure_id=erasure_id, data_category=DataCategory.ALL,
                        reason=reason, requested_by=requested_by, key_destroyed=True, erased_at=now)
    [erased] = await emit(conn, deps.store, pupil_stream(pupil.pupil_id), [event], trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, cause=cause)
    await record_admin_action(conn, deps.store, requested_by, AdminAction.DATA_KEY_DESTROYED, trust_id=pupil.trust_id,
                              target_kind="data_key", target_id=str(pupil.pupil_id), academy_id=pupil.academy_id,
                              pupil_id=pupil.pupil_id, details={"erasure_id": str(erasure_id)}, at=now,
                              cause=cause or erased)
    return erasure_body(erasure_id, pupil, reason.value, requested_by, True, now)


def erasure_body(erasure_id: UUID, pupil: Pupil, reason: str, requested_by: str, key_destroyed: bool,
                 erased_at: datetime) -> dict[str, Any]:
    return {"erasure_id": str(erasure_id), "pupil_id": str(pupil.pupil_id), "academy_id": str(pupil.academy_id),
            "reason": reason, "requested_by": requested_by, "key_destroyed": key_destroyed,
            "erased_at": erased_at.isoformat()}


async def request_erasure(
    conn: AsyncConnection, deps: ConsentDeps, principal: Principal, pupil_id: UUID, reason: ErasureReason,
) -> dict[str, Any]:
    pupil = await pupil_in_scope(conn, principal, pupil_id, allow_erased=True, for_update=True)
    return await erase(conn, deps, pupil, reason=reason, requested_by=principal.subject)

