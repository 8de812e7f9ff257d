"""Read models of the consent service, one function per event type, each idempotent.

* The roster (`pupils`) from the assessment context's PupilEnrolled / PupilLeft, and the last
  activity date from any event about a pupil (assessment and planning): applied by the consumer,
  once per event (the kernel's inbox).
* The consent records and the decisions list from this service's own events: applied by the
  handlers in the same transaction as the append, so a sharing decision made right after a
  withdrawal already sees it. `rebuild` replays them from the event store.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.consent.domain.ledger import ActiveBasis, ConsentRecord, ConsentStatus
from services.consent.tables import consent_decisions, consent_records, erasures, pupils
from shared.events.assessment import PupilEnrolled, PupilLeft
from shared.events.consent import (
    ConsentGranted,
    ConsentRefused,
    ConsentWithdrawn,
    DataKind,
    LawfulBasis,
    LawfulBasisRecorded,
    Purpose,
)
from shared.events.envelope import Envelope
from shared.store.event_store import ORIGIN, EventStore

log = logging.getLogger(__name__)


# --- The roster ---------------------------------------------------------------------------------


async def on_pupil_enrolled(conn: AsyncConnection, envelope: Envelope) -> None:
    event = envelope.data
    assert isinstance(event, PupilEnrolled)
    erased = await conn.scalar(select(erasures.c.erasure_id).where(erasures.c.pupil_id == event.pupil_id))
    if erased is not None:
        return  # An erased pupil never comes back from a replayed or late event.
    statement = insert(pupils).values(
        pupil_id=event.pupil_id, trust_id=envelope.trust_id, academy_id=envelope.academy_id,
        enrolled_on=event.enrolled_on, left_on=None,
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[pupils.c.pupil_id],
            # A move to another academy of the same trust; a pupil never changes trust.
            set_={"academy_id": statement.excluded.academy_id, "enrolled_on": statement.excluded.enrolled_on,
                  "left_on": None, "updated_at": func.now()},
            where=(pupils.c.trust_id == envelope.trust_id) & pupils.c.erased_at.is_(None),
        )
    )


async def on_pupil_left(conn: AsyncConnection, envelope: Envelope) -> None:
    event = envelope.data
    assert isinstance(event, PupilLeft)
    # Only the academy the pupil is at can say they left (a late PupilLeft from a previous
    # academy must not start the retention clock at the new one).
    await conn.execute(
        update(pupils)
        .where(pupils.c.pupil_id == event.pupil_id, pupils.c.trust_id == envelope.trust_id,
               pupils.c.academy_id == envelope.academy_id, pupils.c.erased_at.is_(None))
        .values(left_on=event.left_on, updated_at=func.now())
    )


async def on_pupil_activity(conn: AsyncConnection, envelope: Envelope) -> None:
    """Any observation, assessment, plan or session about a pupil moves their last activity date."""
    pupil_id = getattr(envelope.data, "pupil_id", None)
    if pupil_id is None:
        return
    await touch_activity(conn, envelope.trust_id, pupil_id, envelope.time.date())


async def touch_activity(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID, on: date) -> None:
    await conn.execute(
        update(pupils)
        .where(pupils.c.pupil_id == pupil_id, pupils.c.trust_id == trust_id, pupils.c.erased_at.is_(None))
        .values(last_activity_on=func.greatest(func.coalesce(pupils.c.last_activity_on, on), on))
    )


# --- Consent records and decisions --------------------------------------------------------------


def record_from_row(row: Any, pupil_id: UUID, purpose: Purpose) -> ConsentRecord:
    """The domain record from a consent_records row (None: nothing recorded yet)."""
    if row is None:
        return ConsentRecord(pupil_id=pupil_id, purpose=purpose)
    basis = None
    if row.basis_id is not None:
        basis = ActiveBasis(
            basis_id=row.basis_id, basis=LawfulBasis(row.basis), decided_by=row.basis_decided_by,
            policy_reference=row.basis_policy_reference, decided_at=row.basis_decided_at,
            valid_until=row.basis_valid_until, covers=frozenset(DataKind(k) for k in row.basis_covers or ()),
        )
    return ConsentRecord(
        pupil_id=pupil_id, purpose=purpose, version=row.version, status=ConsentStatus(row.status),
        consent_id=row.consent_id, decided_at=row.decided_at, valid_until=row.valid_until,
        covers=frozenset(DataKind(k) for k in row.covers), latest_at=row.latest_at, basis=basis,
    )


async def load_record(conn: AsyncConnection, pupil_id: UUID, purpose: Purpose) -> ConsentRecord:
    row = (await conn.execute(
        select(consent_records).where(consent_records.c.pupil_id == pupil_id, consent_records.c.purpose == purpose.value)
    )).first()
    return record_from_row(row, pupil_id, purpose)


async def save_record(conn: AsyncConnection, trust_id: UUID, academy_id: UUID, record: ConsentRecord) -> None:
    basis = record.basis
    values = {
        "trust_id": trust_id, "academy_id": academy_id, "version": record.version, "status": record.status.value,
        "consent_id": record.consent_id, "decided_at": record.decided_at, "valid_until": record.valid_until,
        "covers": sorted(k.value for k in record.covers), "latest_at": record.latest_at,
        "basis_id": basis.basis_id if basis else None, "basis": basis.basis.value if basis else None,
        "basis_decided_by": basis.decided_by if basis else None,
        "basis_policy_reference": basis.policy_reference if basis else None,
        "basis_decided_at": basis.decided_at if basis else None,
        "basis_valid_until": basis.valid_until if basis else None,
        "basis_covers": sorted(k.value for k in basis.covers) if basis else None,
    }
    statement = insert(consent_records).values(pupil_id=record.pupil_id, purpose=record.purpose.value, **values)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=[consent_records.c.pupil_id, consent_records.c.purpose], set_=values,
    ))


async def on_consent_event(conn: AsyncConnection, envelope: Envelope) -> None:
    """Fold one ConsentGranted/Refused/Withdrawn/LawfulBasisRecorded into the record and the list."""
    event = envelope.data
    pupil_id, purpose = event.pupil_id, event.purpose  # type: ignore[attr-defined]
    record = await load_record(conn, pupil_id, purpose)
    if record.version >= event.record_version:  # type: ignore[attr-defined]
        return  # already applied (a rebuild that overlaps)
    await save_record(conn, envelope.trust_id, envelope.academy_id, record.apply(event))
    await conn.execute(insert(consent_decisions).values(**_decision_row(envelope)).on_conflict_do_nothing())


def _decision_row(envelope: Envelope) -> dict[str, object]:
    event = envelope.data
    common = {"trust_id": envelope.trust_id, "academy_id": envelope.academy_id,
              "pupil_id": event.pupil_id, "purpose": event.purpose.value,  # type: ignore[attr-defined]
              "record_version": event.record_version}  # type: ignore[attr-defined]
    if isinstance(event, ConsentGranted):
        return {**common, "decision_id": event.consent_id, "kind": "granted", "consent_id": event.consent_id,
                "method": event.method.value, "given_by_sealed": event.given_by,
                "evidence_sealed": event.evidence_reference, "lawful_basis": LawfulBasis.CONSENT.value,
                "covers": [k.value for k in event.covers], "recorded_by": event.recorded_by,
                "decided_at": event.decided_at, "valid_until": event.valid_until}
    if isinstance(event, ConsentRefused):
        return {**common, "decision_id": event.consent_id, "kind": "refused", "consent_id": event.consent_id,
                "method": event.method.value, "given_by_sealed": event.given_by,
                "evidence_sealed": event.evidence_reference, "lawful_basis": LawfulBasis.CONSENT.value,
                "covers": [], "recorded_by": event.recorded_by, "decided_at": event.decided_at}
    if isinstance(event, ConsentWithdrawn):
        return {**common, "decision_id": event.withdrawal_id, "kind": "withdrawn", "consent_id": event.consent_id,
                "method": event.method.value, "given_by_sealed": event.given_by,
                "evidence_sealed": event.evidence_reference, "lawful_basis": LawfulBasis.CONSENT.value,
                "covers": [], "recorded_by": event.recorded_by, "decided_at": event.withdrawn_at}
    if isinstance(event, LawfulBasisRecorded):
        return {**common, "decision_id": event.basis_id, "kind": "lawful_basis", "consent_id": None,
                "reason_sealed": event.reason, "lawful_basis": event.basis.value,
                "policy_reference": event.policy_reference, "covers": [k.value for k in event.covers],
                "recorded_by": event.decided_by, "decided_at": event.decided_at, "valid_until": event.valid_until}
    raise TypeError(f"{type(event).__name__} is not a consent decision")


CONSENT_EVENTS = (ConsentGranted, ConsentRefused, ConsentWithdrawn, LawfulBasisRecorded)


async def rebuild(conn: AsyncConnection, store: EventStore) -> int:
    """Drop the consent records and decisions list and replay them from the event store."""
    await conn.execute(delete(consent_records))
    await conn.execute(delete(consent_decisions))
    # Every event committed when the replay starts (one snapshot, paged through in (transaction
    # id, position) order: no event of that moment is skipped, whatever order it committed in).
    applied, after, moment = 0, ORIGIN, await store.snapshot(conn)
    while True:
        batch, last = await store.read_page(conn, after, within=moment)
        if last is None:
            break
        for recorded in batch:
            if isinstance(recorded.envelope.data, CONSENT_EVENTS):
                await on_consent_event(conn, recorded.envelope)
                applied += 1
        after = last
    # Erasure redacted the sealed fields; a rebuild keeps them redacted.
    erased = select(erasures.c.pupil_id)
    await conn.execute(update(consent_decisions).where(consent_decisions.c.pupil_id.in_(erased))
                       .values(given_by_sealed=None, evidence_sealed=None, reason_sealed=None))
    return applied

