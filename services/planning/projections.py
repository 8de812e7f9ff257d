"""What planning keeps of other contexts' events: pupils and their strand scores (assessment),
participation consent and erasure (consent). Each function is idempotent and refuses to bring an
erased pupil back, so replaying the topics from the start rebuilds the same state."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import any_, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning import opt_out
from services.planning.notes import SessionNotes
from services.planning.tables import erased_pupils, kernel, participation, plans, pupils, sessions, strand_scores
from shared.api import forget_stored_answers
from shared.events.assessment import PupilClassChanged, PupilEnrolled, StrandScored
from shared.events.consent import (
    ConsentGranted,
    ConsentRefused,
    ConsentWithdrawn,
    DataCategory,
    PupilErased,
    Purpose,
    RetentionClock,
    RetentionExpired,
)
from shared.events.envelope import Envelope

ERASING_CATEGORIES = (DataCategory.ALL, DataCategory.ACTION_PLANS)


async def erased_among(conn: AsyncConnection, pupil_ids: Sequence[UUID]) -> set[UUID]:
    if not pupil_ids:
        return set()
    rows = await conn.execute(select(erased_pupils.c.pupil_id).where(erased_pupils.c.pupil_id.in_(list(set(pupil_ids)))))
    return set(rows.scalars())


async def on_strand_scored(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    """A run of StrandScored in one statement per table (the latency path of a suggestion)."""
    erased = await erased_among(conn, [e.data.pupil_id for e in envelopes])  # type: ignore[attr-defined]
    fresh = [e for e in envelopes if e.data.pupil_id not in erased]  # type: ignore[attr-defined]
    fresh = await opt_out.drop_window(conn, fresh)
    if not fresh:
        return
    roster = {e.data.pupil_id: {"pupil_id": e.data.pupil_id, "trust_id": e.trust_id, "academy_id": e.academy_id}  # type: ignore[attr-defined]
              for e in fresh}
    stmt = insert(pupils).values(list(roster.values()))
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[pupils.c.pupil_id], set_={"academy_id": stmt.excluded.academy_id},
        where=pupils.c.trust_id == stmt.excluded.trust_id,
    ))
    rows = []
    for envelope in fresh:
        event: StrandScored = envelope.data  # type: ignore[assignment]
        rows.append({
            "assessment_id": event.assessment_id, "strand": event.strand, "trust_id": envelope.trust_id,
            "academy_id": envelope.academy_id, "pupil_id": event.pupil_id,
            "framework_version": event.framework_version, "need_percents": event.need_percents,
            "strand_percent": event.strand_percent, "threshold_percent": event.threshold_percent,
            "threshold_met": event.threshold_met, "working_at_strand": event.working_at_strand,
            "focus_statements": event.focus_statements, "baseline": event.baseline, "scored_at": event.scored_at,
        })
    await conn.execute(insert(strand_scores).values(rows).on_conflict_do_nothing())


async def on_pupil_placed(conn: AsyncConnection, envelope: Envelope) -> None:
    """PupilEnrolled or PupilClassChanged: the pupil's academy and class (for class plans)."""
    event: PupilEnrolled | PupilClassChanged = envelope.data  # type: ignore[assignment]
    if await erased_among(conn, [event.pupil_id]):
        return
    stmt = insert(pupils).values(pupil_id=event.pupil_id, trust_id=envelope.trust_id,
                                 academy_id=envelope.academy_id, class_id=event.class_id)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[pupils.c.pupil_id],
        set_={"academy_id": stmt.excluded.academy_id, "class_id": stmt.excluded.class_id},
        where=pupils.c.trust_id == stmt.excluded.trust_id,
    ))


async def on_participation(conn: AsyncConnection, envelope: Envelope) -> None:
    """Consent to take part in interventions: withdrawn or refused stops new plans and sessions."""
    event: ConsentGranted | ConsentRefused | ConsentWithdrawn = envelope.data  # type: ignore[assignment]
    if event.purpose is not Purpose.INTERVENTIONS or await erased_among(conn, [event.pupil_id]):
        return
    decided_at = event.withdrawn_at if isinstance(event, ConsentWithdrawn) else event.decided_at
    stmt = insert(participation).values(
        pupil_id=event.pupil_id, trust_id=envelope.trust_id, academy_id=envelope.academy_id,
        withdrawn=not isinstance(event, ConsentGranted), record_version=event.record_version, decided_at=decided_at,
    )
    # The consent record's version orders decisions, whatever order the events arrive in.
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[participation.c.pupil_id],
        set_={"withdrawn": stmt.excluded.withdrawn, "record_version": stmt.excluded.record_version,
              "decided_at": stmt.excluded.decided_at},
        # A pupil never changes trust: a decision claiming another trust changes nothing.
        where=(participation.c.record_version < stmt.excluded.record_version)
        & (participation.c.trust_id == stmt.excluded.trust_id),
    ))


async def on_pupil_erased(conn: AsyncConnection, envelope: Envelope) -> None:
    event: PupilErased = envelope.data  # type: ignore[assignment]
    await erase_pupil(conn, envelope.trust_id, event.pupil_id)


async def on_retention_expired(conn: AsyncConnection, envelope: Envelope) -> None:
    event: RetentionExpired = envelope.data  # type: ignore[assignment]
    if event.data_category in ERASING_CATEGORIES:
        # After an opt-out's grace period (counted from `opt_out`) the pupil is not erased: what was
        # held goes, and a re-grant of processing lets planning work for them again.
        await erase_pupil(conn, envelope.trust_id, event.pupil_id,
                          tombstone=event.counted_from is not RetentionClock.OPT_OUT)
    elif event.data_category is DataCategory.ASSESSMENTS:
        await conn.execute(delete(strand_scores).where(strand_scores.c.pupil_id == event.pupil_id,
                                                       strand_scores.c.trust_id == envelope.trust_id))


async def erase_pupil(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID, *, tombstone: bool = True) -> None:
    """Everything planning holds on the pupil goes; only the pseudonymous id is remembered.

    A plan or session of this pupil alone is deleted; a group plan or session keeps the other
    pupils' part, without this one. The pupil's events leave this service's event store too.
    Every statement is scoped to the trust: an erasure never reaches another trust's rows.
    """
    if tombstone:
        await conn.execute(insert(erased_pupils).values(pupil_id=pupil_id, trust_id=trust_id).on_conflict_do_nothing())
    for table in (strand_scores, participation, pupils) if tombstone else (strand_scores, pupils):
        await conn.execute(delete(table).where(table.c.pupil_id == pupil_id, table.c.trust_id == trust_id))
    await forget_stored_answers(conn, kernel.idempotency, trust_id, pupil_id)
    involved = (any_(plans.c.pupil_ids) == pupil_id) & (plans.c.trust_id == trust_id)
    attended = (any_(sessions.c.pupil_ids) == pupil_id) & (sessions.c.trust_id == trust_id)
    touched_sessions = list((await conn.execute(select(sessions.c.session_id).where(attended))).scalars())
    # A note about a session may speak of every child present: it goes with any of them.
    await SessionNotes.erase(conn, touched_sessions)
    await conn.execute(delete(sessions).where(attended, func.cardinality(sessions.c.pupil_ids) == 1))
    await conn.execute(update(sessions).where(attended).values(pupil_ids=func.array_remove(sessions.c.pupil_ids, pupil_id)))
    await conn.execute(delete(plans).where(involved, func.cardinality(plans.c.pupil_ids) == 1))
    await conn.execute(update(plans).where(involved).values(pupil_ids=func.array_remove(plans.c.pupil_ids, pupil_id)))
    await conn.execute(text(
        """
        WITH gone AS (
          DELETE FROM planning.events
          WHERE trust_id = :trust AND (data->>'pupil_id' = :pupil OR (data ? 'pupil_ids' AND data->'pupil_ids' ? :pupil))
          RETURNING global_position
        )
        DELETE FROM planning.outbox WHERE global_position IN (SELECT global_position FROM gone)
        """
    ), {"pupil": str(pupil_id), "trust": trust_id})
