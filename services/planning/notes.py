"""Session notes: free text about children, so personal data. Every read and write goes through this
one repository, and a note is stored only sealed with the data keys of the children it is about.

A session's note may speak of every child present, so it is sealed under every present child's
key in layers (AES-256-GCM with the first child's key, that ciphertext with the next child's, and
so on, in the order kept in `sealed_for`): reading it needs every one of those keys, and the
erasure of any one child (their key destroyed) makes the note unreadable everywhere, backups
included, exactly as planning's erasure deletes the row. Each layer is bound to the session, so a
layer cannot be moved to another session. A layer adds 28 bytes (nonce and tag), not a factor.

Notes written before sealing (`note` in clear, revision seal_0004) are sealed by
`seal_clear_notes`, which the service runs at start; until then `get` still answers them.
Notes never go into events or logs. The activities of a plan and of a session (free text too) are
sealed here as well (`seal_texts`, `open_texts`), one copy under each child's key.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.planning.tables import session_notes, sessions
from shared.datakeys import SEALED_PREFIX, DataKey, DataKeyDestroyed, PupilKeyring


def _field(session_id: UUID) -> str:
    return f"session_note/{session_id}"


def _raw(sealed: str) -> bytes:
    body = sealed[len(SEALED_PREFIX):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _text(raw: bytes) -> str:
    return SEALED_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def seal_layers(keys: Sequence[DataKey], session_id: UUID, note: str) -> str:
    """The note sealed under each key in turn (the first key's layer innermost)."""
    raw = note.encode()
    for key in keys:
        raw = _raw(key.seal(raw, _field(session_id)))
    return _text(raw)


def open_layers(keys: Sequence[DataKey], session_id: UUID, sealed: str) -> str:
    """The note, opened with the keys it was sealed under (outermost, the last key, first)."""
    raw = _raw(sealed)
    for key in reversed(keys):
        raw = key.open(_text(raw), _field(session_id))
    return raw.decode()


class SessionNotes:
    def __init__(self, keyring: PupilKeyring) -> None:
        self.keyring = keyring

    async def keys(self, trust_id: UUID, pupil_ids: Sequence[UUID]) -> list[DataKey]:
        """Every child's key, in order; DataKeyDestroyed if any of them was erased."""
        return [await self.keyring.key_for(trust_id, pupil_id) for pupil_id in pupil_ids]

    async def put(self, conn: AsyncConnection, session_id: UUID, trust_id: UUID, academy_id: UUID,
                  pupil_ids: Sequence[UUID], note: str) -> None:
        order = sorted(set(pupil_ids), key=str)
        sealed = seal_layers(await self.keys(trust_id, order), session_id, note)
        await conn.execute(session_notes.insert().values(session_id=session_id, trust_id=trust_id, academy_id=academy_id,
                                                         sealed_note=sealed, sealed_for=order))

    async def get(self, conn: AsyncConnection, session_id: UUID) -> str | None:
        """The note, or None when there is none or a child it is about was erased."""
        row = (await conn.execute(select(session_notes.c.trust_id, session_notes.c.note, session_notes.c.sealed_note,
                                         session_notes.c.sealed_for)
                                  .where(session_notes.c.session_id == session_id))).first()
        if row is None:
            return None
        if row.sealed_note is None:
            return row.note  # type: ignore[no-any-return]  # written before sealing, not yet sealed (seal_clear_notes)
        try:
            keys = await self.keys(row.trust_id, row.sealed_for)
        except DataKeyDestroyed:
            return None
        return open_layers(keys, session_id, row.sealed_note)

    @staticmethod
    async def erase(conn: AsyncConnection, session_ids: Sequence[UUID]) -> None:
        if session_ids:
            await conn.execute(delete(session_notes).where(session_notes.c.session_id.in_(list(session_ids))))


async def seal_clear_notes(engine: AsyncEngine, notes: SessionNotes, batch: int = 200) -> int:
    """Seal every note still held in clear (from before revision seal_0004), each under its
    session's children's keys; a note of a child since erased is deleted. Returns how many."""
    done = 0
    while True:
        async with engine.begin() as conn:
            rows: list[Any] = list((await conn.execute(
                select(session_notes.c.session_id, session_notes.c.trust_id, session_notes.c.note, sessions.c.pupil_ids)
                .join(sessions, sessions.c.session_id == session_notes.c.session_id, isouter=True)
                .where(session_notes.c.note.is_not(None))
                .limit(batch).with_for_update(of=session_notes, skip_locked=True))).all())
            if not rows:
                return done
            for row in rows:
                order = sorted(set(row.pupil_ids or ()), key=str)
                try:
                    if not order:
                        raise DataKeyDestroyed(row.session_id)  # a session nobody is left in
                    keys = await notes.keys(row.trust_id, order)
                except DataKeyDestroyed:
                    await conn.execute(delete(session_notes).where(session_notes.c.session_id == row.session_id))
                    continue
                await conn.execute(update(session_notes).where(session_notes.c.session_id == row.session_id).values(
                    note=None, sealed_note=seal_layers(keys, row.session_id, row.note), sealed_for=order))
            done += len(rows)


# --- A plan's activities and a session's activities done ------------------------------------------
# Free text about the children of a plan or session: each stored as {"$sealed": {pupil: "fl1…"}}, one
# copy under each child's key (a group's part opens while any of its children's keys lives). A class
# plan, about no child, keeps its list in clear; so do rows written before sealing.

SEALED = "$sealed"


def plan_field(plan_id: UUID, version: int) -> str:
    return f"plan_activities/{plan_id}/{version}"


def session_field(session_id: UUID) -> str:
    return f"session_activities/{session_id}"


async def seal_texts(keyring: PupilKeyring, trust_id: UUID, pupil_ids: Sequence[UUID], values: list[str],
                     field: str) -> Any:
    """What the table stores for `values`: sealed under each child's key (DataKeyDestroyed if a
    child was erased), or the list itself for a plan about no child."""
    if not pupil_ids:
        return values
    payload = orjson.dumps(values)
    copies = {}
    for pupil_id in sorted(set(pupil_ids), key=str):
        copies[str(pupil_id)] = (await keyring.key_for(trust_id, pupil_id)).seal(payload, field)
    return {SEALED: copies}


async def open_texts(keyring: PupilKeyring, trust_id: UUID, stored: Any, field: str) -> list[str]:
    """The list, opened with the first child's key that still lives ([] when every child was erased)."""
    if not isinstance(stored, dict):
        return list(stored)
    for pupil, sealed in stored[SEALED].items():
        try:
            key = await keyring.key_for(trust_id, UUID(pupil))
        except DataKeyDestroyed:
            continue
        return list(orjson.loads(key.open(sealed, field)))
    return []
