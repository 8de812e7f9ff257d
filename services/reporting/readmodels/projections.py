"""How events become read-model rows: one batch handler per event type, one statement per batch.

Handlers take the tables they write to, so the live consumer (`LIVE`) and a rebuild (the shadow
set) run the very same code. Each statement is an insert keyed by the event's natural key (or its
id): replaying an event changes nothing. Every batch first passes the tombstones (erasure.keep):
nothing about an erased pupil, or of an expired category, is applied again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import case, func, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.readmodels.erasure import Tombstones, keep
from services.reporting.readmodels.tables import ReadModelTables
from shared.events.assessment import (
    AssessmentCompleted,
    ObservationRecorded,
    PupilEnrolled,
    PupilLeft,
    StrandScored,
)
from shared.events.envelope import Envelope
from shared.events.planning import PlanClosed, PlanIssued, PlanReviewed, SessionLogged
from shared.events.registry import Event

Batch = Callable[[AsyncConnection, Sequence[Envelope]], Awaitable[None]]


def _last_by(rows: list[dict[str, Any]], *key: str) -> list[dict[str, Any]]:
    """One row per key (the last wins): a multi-row upsert may not touch a row twice."""
    return list({tuple(row[k] for k in key): row for row in rows}.values())


def _tenant(e: Envelope) -> dict[str, Any]:
    # A pupil never changes trust: the pupil upserts below change a row of the same trust only
    # (the live consumer refuses a contradicting event before it gets here; a rebuild relies on this).
    return {"trust_id": e.trust_id, "academy_id": e.academy_id}


def batch_handlers(t: ReadModelTables, tombstones: Tombstones) -> dict[type[Event], Batch]:
    """The handlers writing to `t`, each behind the tombstones (the register, live; a rebuild's own)."""
    return {event_type: _behind(tombstones, handler) for event_type, handler in _handlers(t).items()}


def _behind(tombstones: Tombstones, handler: Batch) -> Batch:
    async def handle(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        kept = await keep(conn, tombstones, events)
        if kept:
            await handler(conn, kept)
    return handle


def _handlers(t: ReadModelTables) -> dict[type[Event], Batch]:
    async def enrolled(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        rows = _last_by([{"pupil_id": e.data.pupil_id, **_tenant(e), "enrolled_on": e.data.enrolled_on} for e in events],
                        "pupil_id")
        stmt = insert(t.pupils).values(rows)
        p = t.pupils.c
        await conn.execute(stmt.on_conflict_do_update(index_elements=[p.pupil_id], set_={
            "academy_id": stmt.excluded.academy_id,
            "enrolled_on": func.greatest(p.enrolled_on, stmt.excluded.enrolled_on),
            # Rejoining after leaving puts the pupil back on roll.
            "left_on": case((or_(p.left_on.is_(None), stmt.excluded.enrolled_on >= p.left_on), None), else_=p.left_on),
        }, where=p.trust_id == stmt.excluded.trust_id))

    async def left(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        rows = _last_by([{"pupil_id": e.data.pupil_id, **_tenant(e), "left_on": e.data.left_on} for e in events], "pupil_id")
        stmt = insert(t.pupils).values(rows)
        p = t.pupils.c
        await conn.execute(stmt.on_conflict_do_update(index_elements=[p.pupil_id], set_={
            "left_on": case((or_(p.enrolled_on.is_(None), stmt.excluded.left_on >= p.enrolled_on), stmt.excluded.left_on),
                            else_=p.left_on),
        }, where=p.trust_id == stmt.excluded.trust_id))

    async def completed(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        data = [(e, e.data) for e in events]
        await conn.execute(insert(t.assessments).values([
            {"assessment_id": d.assessment_id, "pupil_id": d.pupil_id, **_tenant(e), "framework_version": d.framework_version,
             "strands": d.strands, "completed_at": d.completed_at, "baseline": d.baseline,
             "working_at_strand": d.working_at_strand} for e, d in data
        ]).on_conflict_do_nothing())
        latest: dict[Any, dict[str, Any]] = {}
        for e, d in sorted(data, key=lambda ed: ed[1].completed_at):
            row = latest.setdefault(d.pupil_id, {"pupil_id": d.pupil_id, **_tenant(e), "baseline_assessment_id": None})
            row.update(framework_version=d.framework_version, working_at_strand=d.working_at_strand,
                       expected_strand=d.expected_strand, latest_assessment_id=d.assessment_id,
                       latest_completed_at=d.completed_at, academy_id=e.academy_id)
            if d.baseline:
                row["baseline_assessment_id"] = d.assessment_id
        stmt = insert(t.pupils).values(list(latest.values()))
        p, x = t.pupils.c, stmt.excluded
        newer = or_(p.latest_completed_at.is_(None), x.latest_completed_at >= p.latest_completed_at)
        await conn.execute(stmt.on_conflict_do_update(index_elements=[p.pupil_id], set_={
            "framework_version": case((newer, x.framework_version), else_=p.framework_version),
            "working_at_strand": case((newer, x.working_at_strand), else_=p.working_at_strand),
            "expected_strand": case((newer, x.expected_strand), else_=p.expected_strand),
            "latest_assessment_id": case((newer, x.latest_assessment_id), else_=p.latest_assessment_id),
            "latest_completed_at": case((newer, x.latest_completed_at), else_=p.latest_completed_at),
            "baseline_assessment_id": func.coalesce(p.baseline_assessment_id, x.baseline_assessment_id),
        }, where=p.trust_id == x.trust_id))

    async def scored(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        await conn.execute(insert(t.strand_scores).values(_last_by([
            {"assessment_id": d.assessment_id, "strand": d.strand, "pupil_id": d.pupil_id, **_tenant(e),
             "framework_version": d.framework_version, "need_percents": d.need_percents, "strand_percent": d.strand_percent,
             "threshold_percent": d.threshold_percent, "threshold_met": d.threshold_met,
             "working_at_strand": d.working_at_strand, "focus_statements": d.focus_statements, "baseline": d.baseline,
             "scored_at": d.scored_at} for e in events for d in [e.data]
        ], "assessment_id", "strand")).on_conflict_do_nothing())

    async def observed(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        await conn.execute(insert(t.observations).values(_last_by([
            {"observation_id": d.observation_id, "pupil_id": d.pupil_id, **_tenant(e), "assessment_id": d.assessment_id,
             "framework_version": d.framework_version, "statement_id": d.statement_id, "level": d.level.value,
             "observed_at": d.observed_at, "corrects": d.corrects} for e in events for d in [e.data]
        ], "observation_id")).on_conflict_do_nothing())

    async def issued(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        plans, members = [], []
        for e in events:
            d: PlanIssued = e.data  # type: ignore[assignment]
            plans.append({"plan_id": d.plan_id, "plan_version": d.plan_version, **_tenant(e), "kind": d.kind.value,
                          "strand": d.strand, "targets": d.target_statements, "activities": d.activities,
                          "frequency": d.frequency, "sessions_per_week": d.sessions_per_week,
                          "session_minutes": d.session_minutes, "practitioner_id": d.practitioner_id,
                          "review_on": d.review_on, "issued_at": d.issued_at, "supersedes_version": d.supersedes_version})
            for pupil in {*d.pupil_ids, *([d.pupil_id] if d.pupil_id else [])}:
                members.append({"plan_id": d.plan_id, "pupil_id": pupil, **_tenant(e)})
        await conn.execute(insert(t.plans).values(_last_by(plans, "plan_id", "plan_version")).on_conflict_do_nothing())
        if members:
            await conn.execute(insert(t.plan_pupils).values(_last_by(members, "plan_id", "pupil_id")).on_conflict_do_nothing())

    async def reviewed(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        await conn.execute(insert(t.plan_reviews).values([
            {"event_id": e.id, "plan_id": d.plan_id, "plan_version": d.plan_version, "pupil_id": d.pupil_id, **_tenant(e),
             "reviewed_at": d.reviewed_at, "strand_percent_now": d.strand_percent_now,
             "change_since_previous_plan": d.change_since_previous_plan, "change_since_baseline": d.change_since_baseline,
             "need_percents_now": d.need_percents_now, "assessment_id": d.assessment_id}
            for e in events for d in [e.data]
        ]).on_conflict_do_nothing())

    async def closed(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        await conn.execute(insert(t.plan_closures).values(_last_by([
            {"plan_id": d.plan_id, **_tenant(e), "plan_version": d.plan_version, "closed_at": d.closed_at}
            for e in events for d in [e.data]
        ], "plan_id")).on_conflict_do_nothing())

    async def session(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
        await conn.execute(insert(t.sessions).values([
            {"event_id": e.id, "session_id": d.session_id, "plan_id": d.plan_id, "pupil_id": d.pupil_id, **_tenant(e),
             "held_on": d.held_on, "minutes": d.minutes} for e in events for d in [e.data]
        ]).on_conflict_do_nothing())

    return {
        PupilEnrolled: enrolled, PupilLeft: left, AssessmentCompleted: completed, StrandScored: scored,
        ObservationRecorded: observed, PlanIssued: issued, PlanReviewed: reviewed, PlanClosed: closed,
        SessionLogged: session,
    }


def single_handlers(
    batches: Mapping[type[Event], Batch],
) -> dict[type[Event], Callable[[AsyncConnection, Envelope], Awaitable[None]]]:
    """The same effects one event at a time (what the kernel falls back to when a batch fails)."""
    def one(batch: Batch) -> Callable[[AsyncConnection, Envelope], Awaitable[None]]:
        async def handle(conn: AsyncConnection, envelope: Envelope) -> None:
            await batch(conn, [envelope])
        return handle
    return {event_type: one(batch) for event_type, batch in batches.items()}
