"""Reads of the consent service's tables that its routes, the subject-access export and the
receipts share.

Each returns plain rows; none decides anything or checks scope (the caller does, with
handlers.pupil_in_scope, before or after). The sharing decision's hot read path is not here: it
has a pool and a prepared statement of its own (decisions.py).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.consent.tables import consent_decisions, consent_records, data_keys, erasures, pupils, retention_expiries


async def roster_row(conn: AsyncConnection, pupil_id: UUID) -> Any:
    """The pupil's row as this service knows it (one: the caller has found the pupil already)."""
    return (await conn.execute(select(pupils).where(pupils.c.pupil_id == pupil_id))).one()


async def consent_records_of(conn: AsyncConnection, pupil_id: UUID) -> dict[str, Any]:
    """The pupil's current record per purpose, by purpose (purposes never decided are absent)."""
    rows = await conn.execute(select(consent_records).where(consent_records.c.pupil_id == pupil_id))
    return {row.purpose: row for row in rows}


async def decision_row(conn: AsyncConnection, decision_id: UUID) -> Any:
    return (await conn.execute(select(consent_decisions).where(consent_decisions.c.decision_id == decision_id))).first()


async def decisions_after(conn: AsyncConnection, pupil_id: UUID, after_seq: int, limit: int) -> list[Any]:
    """A page of the pupil's decisions, oldest first, after the one numbered `after_seq`."""
    return list((await conn.execute(
        select(consent_decisions).where(consent_decisions.c.pupil_id == pupil_id, consent_decisions.c.seq > after_seq)
        .order_by(consent_decisions.c.seq).limit(limit)
    )).all())


async def all_decisions(conn: AsyncConnection, pupil_id: UUID) -> list[Any]:
    """Every decision on the pupil's record, oldest first."""
    return list(await conn.execute(
        select(consent_decisions).where(consent_decisions.c.pupil_id == pupil_id).order_by(consent_decisions.c.seq)
    ))


async def retention_expiries_of(conn: AsyncConnection, pupil_id: UUID) -> list[Any]:
    return list(await conn.execute(select(retention_expiries).where(retention_expiries.c.pupil_id == pupil_id)))


async def erasure_row(conn: AsyncConnection, pupil_id: UUID) -> Any:
    return (await conn.execute(select(erasures).where(erasures.c.pupil_id == pupil_id))).first()


async def data_key_row(conn: AsyncConnection, pupil_id: UUID) -> Any:
    """The pupil's wrapped key and when it was destroyed (never the key material unwrapped)."""
    return (await conn.execute(select(data_keys.c.wrapped_key, data_keys.c.destroyed_at)
                               .where(data_keys.c.pupil_id == pupil_id))).first()
