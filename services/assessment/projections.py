"""Read models from events: one function per event type, each idempotent and batch-friendly.

The handlers call `project` in the transaction that appends the events, so a read model is never
behind its events; `rebuild` replays the event store into them at any time. Each function takes
the envelopes of one type (a whole class's ratings at once) and writes them in one statement.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from itertools import groupby
from typing import Any
from uuid import UUID

from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment.tables import (
    DERIVED,
    SCHEMA,
    assessments,
    kernel,
    pupils,
    screenings,
    strand_scores,
)
from shared.events.assessment import (
    AssessmentCompleted,
    AssessmentStarted,
    ObservationRecorded,
    PupilClassChanged,
    PupilEnrolled,
    PupilLeft,
    StrandScored,
)
from shared.events.envelope import Envelope
from shared.events.registry import Event
from shared.events.sealing import EventSealing
from shared.store.event_store import ORIGIN, Checkpoint, EventStore, open_row, select_after

Projection = Callable[[AsyncConnection, Sequence[Envelope]], Awaitable[Any]]


async def pupil_enrolled(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    for envelope in envelopes:
        event: PupilEnrolled = envelope.data  # type: ignore[assignment]
        values = {"class_id": event.class_id, "on_roll": True, "enrolled_on": event.enrolled_on, "left_on": None}
        await conn.execute(
            insert(pupils)
            .values(pupil_id=event.pupil_id, trust_id=envelope.trust_id, academy_id=envelope.academy_id, **values)
            .on_conflict_do_update(index_elements=[pupils.c.pupil_id], set_=values)
        )


async def pupil_class_changed(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    for envelope in envelopes:
        event: PupilClassChanged = envelope.data  # type: ignore[assignment]
        await conn.execute(update(pupils).where(pupils.c.pupil_id == event.pupil_id).values(class_id=event.class_id))


async def pupil_left(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    for envelope in envelopes:
        event: PupilLeft = envelope.data  # type: ignore[assignment]
        await conn.execute(
            update(pupils).where(pupils.c.pupil_id == event.pupil_id).values(on_roll=False, left_on=event.left_on)
        )


_INSERT_OBSERVATIONS = text(
    f"""
    INSERT INTO "{SCHEMA}".observations
      (observation_id, trust_id, academy_id, pupil_id, assessment_id, framework_version, statement_id,
       level, observer_id, observed_at, corrects, has_note)
    SELECT * FROM unnest(
      CAST(:observation_ids AS uuid[]), CAST(:trust_ids AS uuid[]), CAST(:academy_ids AS uuid[]),
      CAST(:pupil_ids AS uuid[]), CAST(:assessment_ids AS uuid[]), CAST(:versions AS text[]),
      CAST(:statement_ids AS text[]), CAST(:levels AS text[]), CAST(:observer_ids AS text[]),
      CAST(:observed_ats AS timestamptz[]), CAST(:corrects AS uuid[]), CAST(:has_notes AS boolean[]))
    ON CONFLICT DO NOTHING
    RETURNING observation_id
    """
)


async def observation_recorded(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> set[UUID]:
    """Insert the observations in one statement; returns the ids that were new.

    An id left out was already there, or repeats an earlier rating (same pupil, statement,
    observer and moment), or corrects an observation that was corrected already: the handler
    turns that into a refusal, a rebuild simply skips it.
    """
    columns: dict[str, list[Any]] = {name: [] for name in (
        "observation_ids", "trust_ids", "academy_ids", "pupil_ids", "assessment_ids", "versions", "statement_ids",
        "levels", "observer_ids", "observed_ats", "corrects", "has_notes")}
    for envelope in envelopes:
        event: ObservationRecorded = envelope.data  # type: ignore[assignment]
        for name, value in zip(columns, (
            event.observation_id, envelope.trust_id, envelope.academy_id, event.pupil_id, event.assessment_id,
            event.framework_version, event.statement_id, event.level.value, event.observer_id, event.observed_at,
            event.corrects, event.has_note,
        ), strict=True):
            columns[name].append(value)
    result = await conn.execute(_INSERT_OBSERVATIONS, columns)
    return set(result.scalars())


async def assessment_started(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    rows, screening_rows = [], {}
    for envelope in envelopes:
        event: AssessmentStarted = envelope.data  # type: ignore[assignment]
        rows.append({
            "assessment_id": event.assessment_id, "trust_id": envelope.trust_id, "academy_id": envelope.academy_id,
            "pupil_id": event.pupil_id, "screening_id": event.screening_id, "framework_version": event.framework_version,
            "strands": event.strands, "started_by": event.started_by, "started_at": event.started_at,
        })
        if event.screening_id is not None:
            screening_rows[event.screening_id] = {
                "screening_id": event.screening_id, "trust_id": envelope.trust_id, "academy_id": envelope.academy_id,
                "class_id": event.class_id, "group_id": event.group_id, "framework_version": event.framework_version,
                "strands": event.strands, "started_by": event.started_by, "started_at": event.started_at,
            }
    await conn.execute(insert(assessments).values(rows).on_conflict_do_nothing())
    if screening_rows:
        await conn.execute(insert(screenings).values(list(screening_rows.values())).on_conflict_do_nothing())


async def assessment_completed(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    for envelope in envelopes:
        event: AssessmentCompleted = envelope.data  # type: ignore[assignment]
        await conn.execute(
            update(assessments).where(assessments.c.assessment_id == event.assessment_id)
            .values(completed_at=event.completed_at, working_at_strand=event.working_at_strand, baseline=event.baseline)
        )


async def strand_scored(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    rows = []
    for envelope in envelopes:
        event: StrandScored = envelope.data  # type: ignore[assignment]
        rows.append({
            "assessment_id": event.assessment_id, "strand": event.strand, "trust_id": envelope.trust_id,
            "academy_id": envelope.academy_id, "pupil_id": event.pupil_id, "framework_version": event.framework_version,
            "need_percents": event.need_percents, "strand_percent": event.strand_percent,
            "threshold_met": event.threshold_met, "working_at_strand": event.working_at_strand,
            "focus_statements": event.focus_statements, "baseline": event.baseline, "scored_at": event.scored_at,
        })
    await conn.execute(insert(strand_scores).values(rows).on_conflict_do_nothing())


PROJECTIONS: dict[type[Event], Projection] = {
    PupilEnrolled: pupil_enrolled,
    PupilClassChanged: pupil_class_changed,
    PupilLeft: pupil_left,
    ObservationRecorded: observation_recorded,
    AssessmentStarted: assessment_started,
    AssessmentCompleted: assessment_completed,
    StrandScored: strand_scored,
}


async def project(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    """Apply events to the read models in order, a run of one type at a time."""
    for event_type, run in groupby(envelopes, key=lambda e: type(e.data)):
        await PROJECTIONS[event_type](conn, list(run))


async def rebuild(conn: AsyncConnection, trust_id: UUID | None = None, page: int = 5000,
                  sealing: EventSealing | None = None) -> int:
    """Clear the derived read models (of one trust, or all) and replay the events into them
    (sealed ones opened with `sealing`, the service's keyring; an erased pupil's are left out)."""
    for table in DERIVED:
        await conn.execute(table.delete().where(table.c.trust_id == trust_id) if trust_id else table.delete())
    events = kernel.events
    # Every event committed when the replay starts (one snapshot, paged through in (transaction
    # id, position) order: no event of that moment is skipped, whatever order it committed in).
    replayed, after, moment = 0, ORIGIN, await EventStore.snapshot(conn)
    while True:
        query = select_after(events, after, page, within=moment)
        if trust_id is not None:
            query = query.where(events.c.trust_id == trust_id)
        rows = (await conn.execute(query)).mappings().all()
        if not rows:
            return replayed
        opened = [await open_row(sealing, r["event_id"], r["event_type"], r["trust_id"], r["academy_id"], r["data"],
                                 r["metadata"]) for r in rows]
        await project(conn, [envelope for envelope in opened if envelope is not None])
        replayed += len(rows)
        after = Checkpoint(rows[-1]["transaction_id"], rows[-1]["global_position"])
