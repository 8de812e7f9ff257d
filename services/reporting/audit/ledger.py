"""The audit ledger's recorder: the only code that writes entries and checkpoints.

Appending locks the trust's chain-head row for the rest of the transaction, so one trust's entries
are chained strictly one after another whichever consumer replica records them, while different
trusts never wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.audit.domain.canonical import GENESIS_HASH, canonical_json
from services.reporting.audit.domain.chain import ChainHead, Checkpoint, EntryRow
from services.reporting.audit.domain.facts import AuditFact
from services.reporting.audit.metrics import entries_appended
from services.reporting.audit.tables import CHECKPOINTS, ENTRIES, HEADS


@dataclass(frozen=True)
class HeadState:
    """A chain's head row: its last entry and its last checkpoint."""

    trust_id: UUID
    seq: int
    entry_hash: str
    checkpoint_seq: int
    checkpoint_at: datetime | None


@dataclass(frozen=True)
class StoredEntry:
    trust_id: UUID
    seq: int
    prev_hash: str
    entry_hash: str
    body: str

    def as_row(self) -> EntryRow:
        return (self.seq, self.prev_hash, self.entry_hash, self.body)

    def as_json(self) -> dict[str, object]:
        return {"seq": self.seq, "prev_hash": self.prev_hash, "entry_hash": self.entry_hash, "body": self.body}


class Ledger:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        entries, checkpoints, heads = (f'"{schema}".{name}' for name in (ENTRIES, CHECKPOINTS, HEADS))
        self.entries_table = entries
        # One round trip per entry: lock the chain head (if the trust has one yet), build the entry's
        # canonical JSON around the fact's (chain first: see domain/canonical.py), hash it, insert
        # it and move the head. PostgreSQL computes the SHA-256 here; every verifier recomputes it
        # independently. An event already in the ledger (a replay) inserts nothing, moves nothing.
        # Two transactions starting the same trust's chain at once both find no head to lock:
        # the second then fails on the (trust_id, seq) key and the consumer retries it.
        self._append_sql = text(
            f"""
            WITH current AS (
              SELECT head_seq, head_hash FROM {heads} WHERE trust_id = :trust_id FOR UPDATE
            ), head AS (
              SELECT coalesce((SELECT head_seq FROM current), 0) AS head_seq,
                     coalesce((SELECT head_hash FROM current), :genesis) AS head_hash
            ), entry AS (
              SELECT head_seq + 1 AS seq, head_hash AS prev_hash,
                     '{{"chain":{{"prev_hash":"' || head_hash || '","seq":' || (head_seq + 1)
                       || ',"trust_id":"' || CAST(:trust_id AS text) || '"}},"fact":' || :fact || '}}' AS body
              FROM head
            ), appended AS (
              INSERT INTO {entries} (trust_id, seq, prev_hash, entry_hash, body)
              SELECT :trust_id, seq, prev_hash, encode(sha256(convert_to(body, 'UTF8')), 'hex'), body FROM entry
              ON CONFLICT (event_id) DO NOTHING
              RETURNING seq, entry_hash
            )
            INSERT INTO {heads} (trust_id, head_seq, head_hash)
            SELECT :trust_id, seq, entry_hash FROM appended
            ON CONFLICT (trust_id) DO UPDATE
              SET head_seq = EXCLUDED.head_seq, head_hash = EXCLUDED.head_hash, updated_at = now()
            RETURNING head_seq
            """
        )
        self._head_sql = text(
            f"SELECT trust_id, head_seq, head_hash, checkpoint_seq, checkpoint_at FROM {heads} WHERE trust_id = :trust_id"
        )
        self._head_for_update_sql = text(
            f"""SELECT trust_id, head_seq, head_hash, checkpoint_seq, checkpoint_at FROM {heads}
                WHERE trust_id = :trust_id FOR UPDATE"""
        )
        self._due_sql = text(
            f"""
            SELECT trust_id FROM {heads}
            WHERE head_seq > checkpoint_seq
              AND (head_seq - checkpoint_seq >= :every_entries
                   OR checkpoint_at IS NULL
                   OR checkpoint_at <= now() - make_interval(secs => :every_s))
            ORDER BY trust_id
            """
        )
        self._backlog_sql = text(
            f"""SELECT coalesce(sum(head_seq - checkpoint_seq), 0) AS unsigned,
                       coalesce(max(extract(epoch FROM now() - coalesce(checkpoint_at, updated_at)))
                                FILTER (WHERE head_seq > checkpoint_seq), 0) AS age_s
                FROM {heads}"""
        )
        self._rows_sql = text(
            f"""SELECT trust_id, seq, prev_hash, entry_hash, body FROM {entries}
                WHERE trust_id = :trust_id AND seq > :after AND seq <= :upto ORDER BY seq"""
        )
        self._entry_sql = text(
            f"SELECT trust_id, seq, prev_hash, entry_hash, body FROM {entries} WHERE trust_id = :trust_id AND seq = :seq"
        )
        self._checkpoint_covering_sql = text(
            f"""SELECT trust_id, seq, entry_hash, signed_at, key_id, signature FROM {checkpoints}
                WHERE trust_id = :trust_id AND seq >= :seq ORDER BY seq LIMIT 1"""
        )
        self._last_checkpoint_sql = text(
            f"""SELECT trust_id, seq, entry_hash, signed_at, key_id, signature FROM {checkpoints}
                WHERE trust_id = :trust_id ORDER BY seq DESC LIMIT 1"""
        )
        self._checkpoints_after_sql = text(
            f"""SELECT trust_id, seq, entry_hash, signed_at, key_id, signature FROM {checkpoints}
                WHERE trust_id = :trust_id AND seq > :after ORDER BY seq"""
        )
        self._signed_chains_sql = text(f"SELECT trust_id FROM {heads} WHERE checkpoint_seq > 0 ORDER BY trust_id")
        self._checkpoints_page_sql = text(
            f"""SELECT trust_id, seq, entry_hash, signed_at, key_id, signature FROM {checkpoints}
                WHERE trust_id = :trust_id AND seq < :before ORDER BY seq DESC LIMIT :limit"""
        )
        self._add_checkpoint_sql = text(
            f"""
            WITH added AS (
              INSERT INTO {checkpoints} (trust_id, seq, entry_hash, signed_at, key_id, signature)
              VALUES (:trust_id, :seq, :entry_hash, :signed_at, :key_id, :signature)
              RETURNING trust_id, seq, signed_at
            )
            UPDATE {heads} SET checkpoint_seq = added.seq, checkpoint_at = added.signed_at
            FROM added WHERE {heads}.trust_id = added.trust_id
            """
        )

    async def append(
        self, conn: AsyncConnection, trust_id: UUID, fact: AuditFact, recorded_at: datetime | None = None
    ) -> int | None:
        """Chain the fact onto the trust's ledger; returns its seq (None if it was already there).

        Must run in the caller's transaction, which holds the trust's head lock until it ends.
        """
        fact_json = canonical_json(fact.as_json(recorded_at or datetime.now(UTC)))
        appended = await conn.execute(
            self._append_sql, {"trust_id": trust_id, "genesis": GENESIS_HASH, "fact": fact_json}
        )
        seq = appended.scalar()
        if seq is None:
            return None
        entries_appended.add(1, {"kind": fact.kind.value})
        return int(seq)

    async def head(self, conn: AsyncConnection, trust_id: UUID, *, for_update: bool = False) -> HeadState | None:
        sql = self._head_for_update_sql if for_update else self._head_sql
        row = (await conn.execute(sql, {"trust_id": trust_id})).first()
        if row is None:
            return None
        return HeadState(row.trust_id, row.head_seq, row.head_hash, row.checkpoint_seq, row.checkpoint_at)

    async def chains_due_for_checkpoint(self, conn: AsyncConnection, every_entries: int, every_s: float) -> list[UUID]:
        result = await conn.execute(self._due_sql, {"every_entries": every_entries, "every_s": every_s})
        return [row.trust_id for row in result]

    async def signing_backlog(self, conn: AsyncConnection) -> tuple[int, float]:
        """Entries not yet covered by a checkpoint, and how long the longest-waiting chain has waited."""
        row = (await conn.execute(self._backlog_sql)).one()
        return int(row.unsigned), float(row.age_s)

    async def entries(self, conn: AsyncConnection, trust_id: UUID, after: int, upto: int) -> list[StoredEntry]:
        """Entries after seq `after` up to and including `upto`, in order."""
        result = await conn.execute(self._rows_sql, {"trust_id": trust_id, "after": after, "upto": upto})
        return [StoredEntry(r.trust_id, r.seq, r.prev_hash, r.entry_hash, r.body) for r in result]

    async def entry(self, conn: AsyncConnection, trust_id: UUID, seq: int) -> StoredEntry | None:
        r = (await conn.execute(self._entry_sql, {"trust_id": trust_id, "seq": seq})).first()
        return StoredEntry(r.trust_id, r.seq, r.prev_hash, r.entry_hash, r.body) if r else None

    async def checkpoint_covering(self, conn: AsyncConnection, trust_id: UUID, seq: int) -> Checkpoint | None:
        """The first checkpoint at or after `seq`: the signature that vouches for that entry."""
        row = (await conn.execute(self._checkpoint_covering_sql, {"trust_id": trust_id, "seq": seq})).first()
        return _checkpoint(row) if row else None

    async def last_checkpoint(self, conn: AsyncConnection, trust_id: UUID) -> Checkpoint | None:
        row = (await conn.execute(self._last_checkpoint_sql, {"trust_id": trust_id})).first()
        return _checkpoint(row) if row else None

    async def checkpoints_after(self, conn: AsyncConnection, trust_id: UUID, after: int) -> list[Checkpoint]:
        """The trust's checkpoints after seq `after`, in order (those a witness may not hold yet)."""
        return [_checkpoint(row) for row in await conn.execute(
            self._checkpoints_after_sql, {"trust_id": trust_id, "after": after})]

    async def signed_chains(self, conn: AsyncConnection) -> list[UUID]:
        """Every trust with a signed checkpoint."""
        return [row.trust_id for row in await conn.execute(self._signed_chains_sql)]

    async def checkpoints_page(
        self, conn: AsyncConnection, trust_id: UUID, before: int | None, limit: int
    ) -> list[Checkpoint]:
        """Checkpoints newest first, those before seq `before` if given."""
        params = {"trust_id": trust_id, "before": before if before is not None else 2**62, "limit": limit}
        return [_checkpoint(row) for row in await conn.execute(self._checkpoints_page_sql, params)]

    async def add_checkpoint(self, conn: AsyncConnection, checkpoint: Checkpoint) -> None:
        await conn.execute(self._add_checkpoint_sql, {
            "trust_id": checkpoint.trust_id, "seq": checkpoint.seq, "entry_hash": checkpoint.entry_hash,
            "signed_at": checkpoint.signed_at, "key_id": checkpoint.key_id, "signature": checkpoint.signature,
        })


def _checkpoint(row: object) -> Checkpoint:
    return Checkpoint(
        trust_id=row.trust_id, seq=row.seq, entry_hash=row.entry_hash,  # type: ignore[attr-defined]
        signed_at=row.signed_at, key_id=row.key_id, signature=row.signature,  # type: ignore[attr-defined]
    )


def head_of(state: HeadState | None) -> ChainHead | None:
    return ChainHead(state.seq, state.entry_hash) if state else None


def rows_of(entries: Sequence[StoredEntry]) -> list[EntryRow]:
    return [entry.as_row() for entry in entries]
