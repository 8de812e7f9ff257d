"""A family's opt-out of processing by the online tool (issue 15), on the assessment side.

Assessment learns the opt-out from consent's event (`ConsentRefused` or `ConsentWithdrawn` for
`online_processing`) rather than asking consent on every rating: a whole class's ratings stay one
local transaction, and an outage of consent stops nothing but what it must. The cost is a window
between consent acknowledging the opt-out to the member of staff and this service consuming it;
whatever was recorded in that window does not survive:

* the consumer (`on_decision`) records the opt-out in `processing_opt_outs` and, in the same
  transaction, deletes every observation, note, assessment start, completion and score of the
  child recorded since the acknowledgement (less `FLOURISH_OPT_OUT_RACE_MARGIN_S`, for commands
  in flight and clocks apart) — read-model rows, the events in this service's store and their
  outbox rows, so an event not yet published never is and a rebuild never brings one back;
* commands (`ensure_processing_allowed`) lock the pupils' roster rows (KEY SHARE) before they
  read `processing_opt_outs`; the consumer locks the pupil's row FOR UPDATE before it purges. So
  a command that started before the purge has committed when the purge looks (and is deleted),
  and one that starts after it sees the opt-out and is refused (403);
* events of the window already published are made not to matter downstream by the same consent
  event: planning drops the scores it learnt since the acknowledgement and refuses new plans;
  reporting leaves the child out of dashboards and reports while the opt-out is in force.

What was held before the opt-out stays until consent's grace period ends (RetentionExpired
counted from `opt_out` for `assessments`): then everything of the child's assessments goes, events
included (`erase_assessments`). Re-granting `online_processing` lets the child be assessed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment.domain.errors import ProcessingOptedOut
from services.assessment.tables import (
    SCHEMA,
    assessments,
    observation_notes,
    observations,
    processing_opt_outs,
    pupils,
    strand_scores,
)
from shared.events.consent import (
    ConsentGranted,
    ConsentRefused,
    ConsentWithdrawn,
    DataCategory,
    Purpose,
    RetentionClock,
    RetentionExpired,
)
from shared.events.envelope import Envelope
from shared.store.event_store import EventStore

REASON = "online_processing_refused"
# The events about a child's assessment this service keeps (the roster's stay: the child is on roll).
ASSESSMENT_EVENTS = ("flourish.assessment.ObservationRecorded.v1", "flourish.assessment.AssessmentStarted.v1",
                     "flourish.assessment.AssessmentCompleted.v1", "flourish.assessment.StrandScored.v1")


class OptOutSettings(BaseSettings):
    """FLOURISH_OPT_OUT_*: how far before consent's acknowledgement the purge of the window reaches."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_OPT_OUT_", extra="ignore")

    # A command in flight when consent acknowledged the opt-out took its time before it; the
    # services' clocks may be apart. Data of the child recorded in this margin before the
    # acknowledgement goes too (it would have gone at the grace period's end unless kept).
    race_margin_s: float = Field(default=5.0, ge=0, le=3600)


# --- Commands -----------------------------------------------------------------------------------


async def opted_out(conn: AsyncConnection, pupil_ids: Iterable[UUID], *, locked: bool = False,
                    streams: tuple[EventStore, Sequence[str]] | None = None) -> set[UUID]:
    """Of these pupils, those whose family opted out of processing by the online tool. Locks
    their roster rows (KEY SHARE) first, so an opt-out being applied is waited for and seen;
    `locked`: an earlier statement of the transaction took those locks already
    (queries.pupil_rows(..., key_share=True)). The opt-outs are read in a statement after the
    locks were granted: its snapshot sees an opt-out that committed while we waited."""
    ids = sorted(set(pupil_ids))
    if not ids:
        return set()
    if not locked:
        await conn.execute(select(pupils.c.pupil_id).where(pupils.c.pupil_id.in_(ids)).with_for_update(key_share=True))
    if streams is not None:
        # The append's stream locks, taken in the same round trip (after the roster locks, as
        # before); the append that follows, in a later statement, sees every earlier append.
        store, stream_ids = streams
        found = await conn.execute(text(
            f'SELECT o.pupil_id FROM {store.streams_locked_sql} LEFT JOIN "{processing_opt_outs.schema}".'
            f'{processing_opt_outs.name} o ON o.pupil_id = ANY(CAST(:pupils AS uuid[])) AND o.opted_out'
        ), {"stream_ids": sorted(set(stream_ids)), "pupils": ids})
        return {pupil_id for (pupil_id,) in found if pupil_id is not None}
    rows = await conn.execute(select(processing_opt_outs.c.pupil_id).where(
        processing_opt_outs.c.pupil_id.in_(ids), processing_opt_outs.c.opted_out))
    return set(rows.scalars())


async def ensure_processing_allowed(conn: AsyncConnection, pupil_ids: Iterable[UUID], *, locked: bool = False,
                                    streams: tuple[EventStore, Sequence[str]] | None = None) -> None:
    """Refuse (ProcessingOptedOut) if any of these pupils' families opted out; `locked` and
    `streams` as for `opted_out`."""
    refused = await opted_out(conn, pupil_ids, locked=locked, streams=streams)
    if refused:
        raise ProcessingOptedOut(sorted(refused))


# --- What the consumer does ---------------------------------------------------------------------


async def on_decision(conn: AsyncConnection, envelope: Envelope, margin: timedelta) -> None:
    """ConsentGranted/Refused/Withdrawn: for `online_processing`, record where the child stands
    (the record's version orders decisions, whatever order they arrive in); an opt-out also
    purges what was recorded since it was acknowledged."""
    event: ConsentGranted | ConsentRefused | ConsentWithdrawn = envelope.data  # type: ignore[assignment]
    if event.purpose is not Purpose.ONLINE_PROCESSING:
        return
    decided_at = event.withdrawn_at if isinstance(event, ConsentWithdrawn) else event.decided_at
    refused = not isinstance(event, ConsentGranted)
    # The opt-out waits for commands about the child in flight, and commands after it wait for it.
    await conn.execute(select(pupils.c.pupil_id).where(pupils.c.pupil_id == event.pupil_id).with_for_update())
    since = envelope.time - margin
    values = {"opted_out": refused, "record_version": event.record_version, "decided_at": decided_at,
              "acknowledged_at": envelope.time, "purged_since": since if refused else None}
    stmt = insert(processing_opt_outs).values(pupil_id=event.pupil_id, trust_id=envelope.trust_id,
                                              academy_id=envelope.academy_id, **values)
    applied = await conn.execute(stmt.on_conflict_do_update(
        index_elements=[processing_opt_outs.c.pupil_id], set_={**values, "updated_at": func.now()},
        # A pupil never changes trust: a decision claiming another trust changes nothing.
        where=(processing_opt_outs.c.record_version < stmt.excluded.record_version)
        & (processing_opt_outs.c.trust_id == stmt.excluded.trust_id),
    ).returning(processing_opt_outs.c.pupil_id))
    if applied.first() is not None and refused:
        await purge(conn, envelope.trust_id, event.pupil_id, since)


async def _streams_of(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID) -> list[str]:
    ids = (await conn.execute(select(assessments.c.assessment_id).where(
        assessments.c.pupil_id == pupil_id, assessments.c.trust_id == trust_id))).scalars()
    return [f"pupil-{pupil_id}", *(f"assessment-{a}" for a in ids)]


_DELETE_EVENTS = text(f"""
    WITH gone AS (
      DELETE FROM "{SCHEMA}".events
      WHERE stream_id = ANY(CAST(:streams AS text[])) AND trust_id = :trust AND event_type = ANY(CAST(:types AS text[]))
        AND data->>'pupil_id' = :pupil AND recorded_at >= :since
      RETURNING global_position, event_type, data
    ), unsent AS (
      DELETE FROM "{SCHEMA}".outbox WHERE global_position IN (SELECT global_position FROM gone)
    )
    SELECT event_type, data FROM gone
""")


async def purge(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID, since: datetime | None) -> int:
    """Delete the child's observations, notes, assessments and scores recorded since `since` (all
    of them: None), the events that recorded them and their unpublished outbox rows. Returns how
    many events went. Started assessments of other children (a screening) are not touched."""
    streams = await _streams_of(conn, trust_id, pupil_id)
    gone = (await conn.execute(_DELETE_EVENTS, {
        "streams": streams, "trust": trust_id, "types": list(ASSESSMENT_EVENTS), "pupil": str(pupil_id),
        "since": since if since is not None else datetime(1970, 1, 1, tzinfo=UTC),
    })).all()
    by_type: dict[str, list[Any]] = {}
    for row in gone:
        by_type.setdefault(row.event_type.split(".")[2], []).append(row.data)
    observation_ids = [UUID(d["observation_id"]) for d in by_type.get("ObservationRecorded", [])]
    started = [UUID(d["assessment_id"]) for d in by_type.get("AssessmentStarted", [])]
    completed = [UUID(d["assessment_id"]) for d in by_type.get("AssessmentCompleted", [])]
    scored = [UUID(d["assessment_id"]) for d in by_type.get("StrandScored", [])]
    mine = (observation_notes.c.trust_id == trust_id) & (observation_notes.c.pupil_id == pupil_id)
    if observation_ids:
        await conn.execute(delete(observation_notes).where(mine, observation_notes.c.observation_id.in_(observation_ids)))
        await conn.execute(delete(observations).where(observations.c.observation_id.in_(observation_ids),
                                                      observations.c.pupil_id == pupil_id))
    if scored or completed:
        await conn.execute(delete(strand_scores).where(strand_scores.c.assessment_id.in_(scored + completed),
                                                       strand_scores.c.pupil_id == pupil_id))
    if completed:
        # Started before the window, completed in it: open again, as it was when acknowledged.
        await conn.execute(update(assessments).where(assessments.c.assessment_id.in_(completed)).values(
            completed_at=None, working_at_strand=None, baseline=None))
    if started:
        await conn.execute(delete(observations).where(observations.c.assessment_id.in_(started),
                                                      observations.c.pupil_id == pupil_id))
        await conn.execute(delete(assessments).where(assessments.c.assessment_id.in_(started),
                                                     assessments.c.pupil_id == pupil_id))
    return len(gone)


async def erase_assessments(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID) -> None:
    """The grace period after an opt-out ended without a DPO's reason to keep: every observation,
    note, assessment and score of the child goes, events included. The roster record stays."""
    await purge(conn, trust_id, pupil_id, None)
    for table in (observation_notes, observations, strand_scores, assessments):
        await conn.execute(delete(table).where(table.c.pupil_id == pupil_id, table.c.trust_id == trust_id))


def handlers(settings: OptOutSettings, retention_expired: Any) -> dict[type[Any], Any]:
    """The consent events this adds to assessment's consent consumer; `retention_expired` is the
    erasure module's handler, which every RetentionExpired still goes through."""
    margin = timedelta(seconds=settings.race_margin_s)

    async def decision(conn: AsyncConnection, envelope: Envelope) -> None:
        await on_decision(conn, envelope, margin)

    async def expired(conn: AsyncConnection, envelope: Envelope) -> None:
        await retention_expired(conn, envelope)
        data: RetentionExpired = envelope.data  # type: ignore[assignment]
        if data.counted_from is RetentionClock.OPT_OUT and data.data_category is DataCategory.ASSESSMENTS:
            await erase_assessments(conn, envelope.trust_id, data.pupil_id)

    return {ConsentGranted: decision, ConsentRefused: decision, ConsentWithdrawn: decision, RetentionExpired: expired}


__all__ = ["REASON", "OptOutSettings", "ProcessingOptedOut", "ensure_processing_allowed", "erase_assessments",
           "handlers", "on_decision", "opted_out", "purge"]
