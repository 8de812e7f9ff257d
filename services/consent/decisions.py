"""The sharing decision's read path: one prepared query on a small asyncpg pool of its own.

The decision is on the hot path of every share (asked at request and again at delivery), so it
skips the ORM layers: a prepared statement on a raw asyncpg connection costs a tenth of a
millisecond where the pooled SQLAlchemy connection (with its pre-ping) costs almost one. It reads
the same row the handlers write in the same transaction as the events, so it is as fresh as the
ledger itself.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from uuid import UUID

import asyncpg

from services.consent.tables import SCHEMA

_QUERY = f"""
SELECT p.trust_id, p.academy_id, p.erased_at,
       r.version, r.status, r.consent_id, r.decided_at, r.valid_until, r.covers, r.latest_at,
       r.basis_id, r.basis, r.basis_decided_by, r.basis_policy_reference, r.basis_decided_at,
       r.basis_valid_until, r.basis_covers
FROM "{SCHEMA}".pupils p
LEFT JOIN "{SCHEMA}".consent_records r ON r.pupil_id = p.pupil_id AND r.purpose = $2
WHERE p.pupil_id = $1
"""


class DecisionReader:
    """Reads a pupil's tenancy and their record for one purpose; started and stopped with the app."""

    def __init__(self, dsn: str, size: int = 4) -> None:
        self._dsn = dsn
        self._size = size
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._size)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def read(self, pupil_id: UUID, purpose: str) -> Any | None:
        """The row (attribute access, as SQLAlchemy rows give), or None for an unknown pupil."""
        if self._pool is None:
            raise RuntimeError("the decision reader is not started")
        async with self._pool.acquire() as conn:
            record = await conn.fetchrow(_QUERY, pupil_id, purpose)
        return None if record is None else SimpleNamespace(**dict(record))
