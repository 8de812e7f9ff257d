"""Session notes: free text about a child, so personal data. Every read and write goes through
this one repository (they will be sealed with per-pupil data keys here); notes never go into
events or logs."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning.tables import session_notes


class SessionNotes:
    async def put(self, conn: AsyncConnection, session_id: UUID, trust_id: UUID, academy_id: UUID, note: str) -> None:
        await conn.execute(session_notes.insert().values(session_id=session_id, trust_id=trust_id,
                                                         academy_id=academy_id, note=note))

    async def get(self, conn: AsyncConnection, session_id: UUID) -> str | None:
        return await conn.scalar(select(session_notes.c.note).where(session_notes.c.session_id == session_id))  # type: ignore[no-any-return]

    async def erase(self, conn: AsyncConnection, session_ids: Sequence[UUID]) -> None:
        if session_ids:
            await conn.execute(delete(session_notes).where(session_notes.c.session_id.in_(list(session_ids))))
