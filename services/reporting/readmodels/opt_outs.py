"""A family's opt-out of processing by the online tool (issue 15), on the reporting side.

Reporting learns it from consent's decisions (`online_processing` refused or withdrawn; granted
again) on its consent consumer, and while it is in force leaves the child out of the academy and
trust dashboards and refuses their profile and intervention report (403). Nothing the read
models hold is deleted here: what was held goes when the grace period ends (RetentionExpired),
and whatever assessment recorded between consent's acknowledgement and its own learning of the
opt-out is purged there and stays out of sight here for as long as the opt-out is in force.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.tables import processing_opt_outs
from shared.events.consent import ConsentGranted, ConsentRefused, ConsentWithdrawn, Purpose
from shared.events.envelope import Envelope
from shared.messaging.consumer import Handler
from shared.problems import OnlineProcessingRefused
from shared.service import ConsumerSpec


def opted_out_clause(pupil_id: Any) -> ColumnElement[bool]:
    """True for a pupil (column or id) whose family opted out: `where(~opted_out_clause(...))` leaves them out."""
    o = processing_opt_outs.c
    return exists(select(o.pupil_id).where(o.pupil_id == pupil_id, o.opted_out))


async def ensure_processing_allowed(conn: AsyncConnection, pupil_id: UUID) -> None:
    if await conn.scalar(select(opted_out_clause(pupil_id))):
        raise OnlineProcessingRefused(
            "the family opted out of processing by the online tool (online_processing refused): the child is left "
            "out of reports", extras={"reason": "online_processing_refused", "pupil_ids": [str(pupil_id)]})


async def on_decision(conn: AsyncConnection, envelope: Envelope) -> None:
    """ConsentGranted/Refused/Withdrawn for `online_processing`; the record's version orders them."""
    event: ConsentGranted | ConsentRefused | ConsentWithdrawn = envelope.data  # type: ignore[assignment]
    if event.purpose is not Purpose.ONLINE_PROCESSING:
        return
    decided_at = event.withdrawn_at if isinstance(event, ConsentWithdrawn) else event.decided_at
    stmt = insert(processing_opt_outs).values(
        pupil_id=event.pupil_id, trust_id=envelope.trust_id, academy_id=envelope.academy_id,
        opted_out=not isinstance(event, ConsentGranted), record_version=event.record_version, decided_at=decided_at)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[processing_opt_outs.c.pupil_id],
        set_={"opted_out": stmt.excluded.opted_out, "record_version": stmt.excluded.record_version,
              "decided_at": stmt.excluded.decided_at},
        where=(processing_opt_outs.c.record_version < stmt.excluded.record_version)
        & (processing_opt_outs.c.trust_id == stmt.excluded.trust_id),
    ))


def _both(first: Handler, second: Handler) -> Handler:
    async def handle(conn: AsyncConnection, envelope: Envelope) -> None:
        await first(conn, envelope)
        await second(conn, envelope)

    return handle


def with_opt_outs(spec: ConsumerSpec) -> ConsumerSpec:
    """A consumer of the consent context that also keeps `processing_opt_outs` (in the same
    transaction as the consumer's own handling of the event)."""

    def handlers_from(deps: Any) -> dict[type[Any], Handler]:
        merged = spec.handlers_with(deps)
        for event_type in (ConsentGranted, ConsentRefused, ConsentWithdrawn):
            theirs = merged.get(event_type)
            merged[event_type] = _both(theirs, on_decision) if theirs is not None else on_decision
        return merged

    return replace(spec, handlers={}, handlers_from=handlers_from)
