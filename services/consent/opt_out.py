"""The family's opt-out of processing by the online tool (issue 15), on the consent side.

The opt-out itself is an ordinary decision (`ConsentRefused` or `ConsentWithdrawn` for
`online_processing`): the other services learn it from the event and stop processing the child.
What was already held on the child (assessments, action plans, shared reports) is erased when a
grace period counted from the day the opt-out was recorded ends (`FLOURISH_CONSENT_OPT_OUT_GRACE_DAYS`,
30 by default): the retention scheduler emits `RetentionExpired` for each of those categories,
counted from `opt_out`. Never `all`: the pupil's key stays, because the consent record of the
opt-out is kept as the record of the family's choice. Within the period a DPO may record a lawful
reason to keep it (`OptOutRetentionKept`, in the audit ledger); then nothing is erased for that
opt-out. A new opt-out after a re-grant starts its own period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import and_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.consent.domain.errors import NoOptOut, OptOutAlreadyKept, OptOutGracePassed
from services.consent.domain.retention import Expiry
from services.consent.handlers import ConsentDeps, pupil_in_scope, pupil_stream
from services.consent.tables import consent_decisions, consent_records, opt_out_retention, pupils, retention_expiries
from shared.auth import Principal
from shared.events.consent import (
    DataCategory,
    OptOutRetentionBasis,
    OptOutRetentionKept,
    Purpose,
    RetentionClock,
)
from shared.store.emission import emit

PURPOSE = Purpose.ONLINE_PROCESSING
OPTED_OUT = ("refused", "withdrawn")
# What the grace period's end erases: everything held on the child but the consent record.
CATEGORIES = (DataCategory.ASSESSMENTS, DataCategory.ACTION_PLANS, DataCategory.SHARED_REPORTS)
EXPLANATION = "consent.opt_out_retention_explanation"


@dataclass(frozen=True)
class OptOut:
    """The opt-out in force on a pupil's record: the decision's id and when it was recorded."""

    pupil_id: UUID
    trust_id: UUID
    academy_id: UUID
    consent_id: UUID
    recorded_at: datetime
    kept: bool

    def due_on(self, grace_days: int) -> date:
        return self.recorded_at.date() + timedelta(days=grace_days)


def _opt_outs() -> Any:
    r, d = consent_records.c, consent_decisions.c
    return (
        select(r.pupil_id, r.trust_id, r.academy_id, d.decision_id, d.recorded_at,
               opt_out_retention.c.consent_id.is_not(None).label("kept"))
        .join(consent_decisions, and_(d.pupil_id == r.pupil_id, d.purpose == r.purpose, d.record_version == r.version))
        .join(opt_out_retention, opt_out_retention.c.consent_id == d.decision_id, isouter=True)
        .where(r.purpose == PURPOSE.value, r.status.in_(OPTED_OUT))
    )


def _opt_out(row: Any) -> OptOut:
    return OptOut(row.pupil_id, row.trust_id, row.academy_id, row.decision_id, row.recorded_at, bool(row.kept))


async def opt_out_of(conn: AsyncConnection, pupil_id: UUID) -> OptOut | None:
    row = (await conn.execute(_opt_outs().where(consent_records.c.pupil_id == pupil_id))).first()
    return None if row is None else _opt_out(row)


async def keep_held_data(
    conn: AsyncConnection, deps: ConsentDeps, principal: Principal, pupil_id: UUID, *, basis: OptOutRetentionBasis,
    explanation: str, grace_days: int,
) -> dict[str, Any]:
    """The DPO's lawful reason to keep what was held when the family opted out (within the period)."""
    pupil = await pupil_in_scope(conn, principal, pupil_id, for_update=True)
    opt_out = await opt_out_of(conn, pupil_id)
    if opt_out is None:
        raise NoOptOut(f"pupil {pupil_id} has no opt-out of online processing in force")
    if opt_out.kept:
        raise OptOutAlreadyKept(f"a reason to keep the data held was already recorded for opt-out {opt_out.consent_id}")
    now = deps.clock()
    if now.date() >= opt_out.due_on(grace_days):
        raise OptOutGracePassed(f"the {grace_days}-day period after the opt-out ended on {opt_out.due_on(grace_days)}")
    key = await deps.vault.key_for(conn, pupil.trust_id, pupil_id)
    sealed = key.seal_text(explanation, EXPLANATION)
    event = OptOutRetentionKept(consent_id=opt_out.consent_id, pupil_id=pupil_id, purpose=PURPOSE,
                                retention_basis=basis, explanation=sealed, decided_by=principal.subject, decided_at=now)
    # On the pupil's stream (as expiries and erasure), not the record's: the record's version is
    # what the next decision about online processing is appended against.
    await emit(conn, deps.store, pupil_stream(pupil_id), [event], trust_id=pupil.trust_id, academy_id=pupil.academy_id)
    await conn.execute(insert(opt_out_retention).values(
        consent_id=opt_out.consent_id, pupil_id=pupil_id, trust_id=pupil.trust_id, academy_id=pupil.academy_id,
        retention_basis=basis.value, explanation_sealed=sealed, decided_by=principal.subject, decided_at=now))
    return {"pupil_id": str(pupil_id), "consent_id": str(opt_out.consent_id), "retention_basis": basis.value,
            "decided_by": principal.subject, "decided_at": now.isoformat(),
            "grace_period_ends_on": opt_out.due_on(grace_days).isoformat()}


async def status_of(conn: AsyncConnection, pupil_id: UUID, grace_days: int) -> dict[str, Any] | None:
    """What the consent status shows of an opt-out in force: when its period ends, whether kept."""
    opt_out = await opt_out_of(conn, pupil_id)
    if opt_out is None:
        return None
    return {"consent_id": str(opt_out.consent_id), "recorded_at": opt_out.recorded_at.isoformat(),
            "held_data_erased_on": None if opt_out.kept else opt_out.due_on(grace_days).isoformat(),
            "kept_by_dpo": opt_out.kept}


async def due(conn: AsyncConnection, today: date, grace_days: int, trust_id: UUID | None = None) -> list[OptOut]:
    """Opt-outs in force whose period ended on or before today, not kept by a DPO, pupil not erased."""
    done = select(retention_expiries.c.pupil_id).where(
        retention_expiries.c.pupil_id == consent_records.c.pupil_id,
        retention_expiries.c.policy_id == consent_decisions.c.decision_id).exists()
    query = _opt_outs().join(pupils, pupils.c.pupil_id == consent_records.c.pupil_id).where(
        pupils.c.erased_at.is_(None), opt_out_retention.c.consent_id.is_(None), ~done)
    if trust_id is not None:
        query = query.where(consent_records.c.trust_id == trust_id)
    return [o for o in map(_opt_out, (await conn.execute(query)).all()) if o.due_on(grace_days) <= today]


def expiries_of(opt_out: OptOut, grace_days: int) -> list[Expiry]:
    """RetentionExpired for each category held, counted from the opt-out; the policy named is the
    opt-out decision itself."""
    return [Expiry(opt_out.pupil_id, category, opt_out.consent_id, RetentionClock.OPT_OUT, opt_out.due_on(grace_days))
            for category in CATEGORIES]
