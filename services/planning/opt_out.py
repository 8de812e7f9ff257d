"""A family's opt-out of processing by the online tool (issue 15), on the planning side.

Planning learns it from consent's decisions (`online_processing` refused or withdrawn) and, while
it is in force, refuses new plans, revisions, issues and sessions for the child (403) and makes
no suggestion for them. The scores it learnt from assessment since consent acknowledged the
opt-out (less `FLOURISH_OPT_OUT_RACE_MARGIN_S`) are dropped: assessment purges that window too,
so an event of it already consumed here does not outlive it. What was held before stays until
the grace period's end (RetentionExpired for `action_plans` erases the pupil here, as any expiry
of that category does; for `assessments`, their scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning.domain.errors import ProcessingOptedOut
from services.planning.tables import processing_opt_outs, strand_scores
from shared.events.consent import ConsentGranted, ConsentRefused, ConsentWithdrawn, Purpose
from shared.events.envelope import Envelope


class OptOutSettings(BaseSettings):
    """FLOURISH_OPT_OUT_RACE_MARGIN_S: as the assessment service reads it."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_OPT_OUT_", extra="ignore")

    race_margin_s: float = Field(default=5.0, ge=0, le=3600)


async def opted_out(conn: AsyncConnection, pupil_ids: Sequence[UUID]) -> set[UUID]:
    if not pupil_ids:
        return set()
    rows = await conn.execute(select(processing_opt_outs.c.pupil_id).where(
        processing_opt_outs.c.pupil_id.in_(list(set(pupil_ids))), processing_opt_outs.c.opted_out))
    return set(rows.scalars())


async def ensure_processing_allowed(conn: AsyncConnection, pupil_ids: Sequence[UUID]) -> None:
    refused = await opted_out(conn, pupil_ids)
    if refused:
        raise ProcessingOptedOut(sorted(refused))


async def on_decision(conn: AsyncConnection, envelope: Envelope) -> None:
    """ConsentGranted/Refused/Withdrawn for `online_processing`; the record's version orders them."""
    event: ConsentGranted | ConsentRefused | ConsentWithdrawn = envelope.data  # type: ignore[assignment]
    if event.purpose is not Purpose.ONLINE_PROCESSING:
        return
    decided_at = event.withdrawn_at if isinstance(event, ConsentWithdrawn) else event.decided_at
    refused = not isinstance(event, ConsentGranted)
    since = envelope.time - timedelta(seconds=OptOutSettings().race_margin_s) if refused else None
    stmt = insert(processing_opt_outs).values(
        pupil_id=event.pupil_id, trust_id=envelope.trust_id, academy_id=envelope.academy_id, opted_out=refused,
        record_version=event.record_version, decided_at=decided_at, purged_since=since)
    applied = await conn.execute(stmt.on_conflict_do_update(
        index_elements=[processing_opt_outs.c.pupil_id],
        set_={"opted_out": stmt.excluded.opted_out, "record_version": stmt.excluded.record_version,
              "decided_at": stmt.excluded.decided_at, "purged_since": stmt.excluded.purged_since},
        where=(processing_opt_outs.c.record_version < stmt.excluded.record_version)
        & (processing_opt_outs.c.trust_id == stmt.excluded.trust_id),
    ).returning(processing_opt_outs.c.pupil_id))
    if applied.first() is not None and since is not None:
        await conn.execute(delete(strand_scores).where(
            strand_scores.c.pupil_id == event.pupil_id, strand_scores.c.trust_id == envelope.trust_id,
            strand_scores.c.scored_at >= since))


async def drop_window(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> list[Envelope]:
    """StrandScored that arrive after the opt-out (the two topics are consumed apart): the scores
    of an opted-out child made since the acknowledgement (less the margin) are not kept."""
    ids = list({e.data.pupil_id for e in envelopes})  # type: ignore[attr-defined]
    if not ids:
        return list(envelopes)
    rows = await conn.execute(select(processing_opt_outs.c.pupil_id, processing_opt_outs.c.purged_since).where(
        processing_opt_outs.c.pupil_id.in_(ids), processing_opt_outs.c.opted_out))
    since = {r.pupil_id: r.purged_since for r in rows if r.purged_since is not None}
    return [e for e in envelopes
            if e.data.pupil_id not in since or e.data.scored_at < since[e.data.pupil_id]]  # type: ignore[attr-defined]
