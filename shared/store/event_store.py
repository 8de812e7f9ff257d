"""The event store: streams of events with versions, optimistic concurrency and a global position.

Appending writes the events and their outbox rows in the caller's transaction, so an event is
published if and only if it was committed. Appends to different streams do not wait for each
other: an append locks only its own streams (transaction-scoped advisory locks, taken in one
order), which numbers an any-version append after the stream's last committed version and keeps
a stream's versions in its positions' order. So global positions are insert order, not commit
order: a transaction that appends first and commits last leaves an event below positions already
committed. Readers of the whole store (read_all, the rebuilds) therefore read in (transaction id,
position) order and stop below the oldest transaction still running, the snapshot's horizon
(eugene-khyst/postgresql-event-sourcing; Marten's high-water mark): every transaction below it has
ended, so nothing can appear behind a reader's checkpoint later. The outbox relay deletes what it
sends and needs no horizon (shared/store/outbox.py).

What an event says about a child (its model's `personal` fields) is sealed with the child's data
key before the row is written (shared.events.sealing), so the events table, the outbox and the
Kafka record the relay copies from them hold it only as ciphertext; reads open it with the same
keyring and leave out an event whose every subject was erased. A store without a keyring refuses
to write or read such an event (SealingUnavailable): it never writes one in clear.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Select, Table, Text, cast, func, literal, literal_column, select, text, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import UserDefinedType

from shared.events.envelope import Envelope
from shared.events.registry import Event, model_for
from shared.events.sealing import EventSealing, SealingUnavailable, open_data
from shared.store.tables import KernelTables, Xid8
from shared.telemetry import events_appended

ANY_VERSION: int | None = None
NO_STREAM = 0


class EventTooLarge(ValueError):
    """An event bigger than Kafka will carry: refused at append, where the caller can still be
    told, rather than committed and left to block the outbox for ever."""

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(f"a {event_type} of {size} bytes is over the {limit}-byte limit for one event")
        self.event_type = event_type
        self.size = size
        self.limit = limit


class StreamVersionConflict(Exception):
    """Someone else appended to the stream since the writer read it: reload, decide again."""

    def __init__(self, stream_id: str, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual if actual is not None else 'unknown'}, "
            f"the writer expected {expected}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, order=True)
class Checkpoint:
    """Where a reader of the whole store is: the last event it read, as (the id of the
    transaction that appended it, its global position) - the order read_all reads in."""

    transaction_id: int = 0
    position: int = 0


ORIGIN = Checkpoint()


@dataclass(frozen=True)
class RecordedEvent:
    position: int
    stream_id: str
    stream_version: int
    envelope: Envelope[Event]
    recorded_at: datetime
    transaction_id: int = 0

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.transaction_id, self.position)


@dataclass(frozen=True)
class PendingAppend:
    """What one stream gets in a batched append."""

    stream_id: str
    envelopes: Sequence[Envelope[Event]]
    expected_version: int | None = ANY_VERSION


class EventStore:
    def __init__(self, tables: KernelTables, max_event_bytes: int = 900_000,
                 sealing: EventSealing | None = None) -> None:
        self.tables = tables
        # Seals events' personal fields on append and opens them on read: the service's keyring
        # (the kernel's Runtime sets it once the service's bootstrap has built the keyring).
        self.sealing = sealing
        # Kafka's default message limit is 1 MiB; leave room for headers and batch framing.
        self.max_event_bytes = max_event_bytes
        schema = _identifier(tables.schema)
        self._insert_sql = text(self._insert(schema, "0"))
        # Appends that take any version (audit facts, most consumers' effects) number their events
        # in the insert itself, after the stream's last version: one round trip fewer. Their
        # streams' locks are held by then, and the statement's snapshot, taken after they were
        # granted, sees every append to those streams committed before.
        self._insert_any_version_sql = text(self._insert(schema, f"""coalesce((
            SELECT max(v.stream_version) FROM "{schema}".events v WHERE v.stream_id = e.stream_id), 0)"""))
        # The streams' locks: (the schema, the stream) in the two-key space of advisory locks
        # (apart from the relay's one-key election lock), taken in key order so two appends
        # that share streams cannot deadlock on them. Held until the transaction ends: a stream
        # has one appender at a time, and the next one sees its events committed.
        streams_locked = f"""(SELECT count(pg_advisory_xact_lock(hashtext('{schema}'), k.key))
              FROM (SELECT DISTINCT hashtext(s) AS key FROM unnest(CAST(:stream_ids AS text[])) s ORDER BY 1) k)"""
        self._lock_sql = text(f"SELECT {streams_locked}")
        # For a caller's earlier statement to take the locks along with its own work (one round
        # trip fewer): a FROM item of one row, bound to `:stream_ids`; see `append_batch(locked=)`.
        self.streams_locked_sql = f"{streams_locked} AS _streams_locked(n)"
        self._versions_sql = text(
            f"""
            SELECT stream_id, max(stream_version) FROM "{schema}".events
            WHERE stream_id = ANY(CAST(:stream_ids AS text[])) GROUP BY stream_id
            """
        )
        # Locks and versions in one statement, for appends that all name their expected version:
        # the versions are read in a snapshot taken before the locks were granted, so a writer
        # that waited may read a version already passed; its insert then meets the unique
        # (stream_id, stream_version) and fails as StreamVersionConflict, which it is.
        self._lock_and_versions_sql = text(
            f"""
            SELECT v.stream_id, v.version FROM {streams_locked} AS l(n)
            LEFT JOIN (SELECT stream_id, max(stream_version) AS version FROM "{schema}".events
                       WHERE stream_id = ANY(CAST(:stream_ids AS text[])) GROUP BY stream_id) v ON true
            """
        )

    @staticmethod
    def _insert(schema: str, base_version: str) -> str:
        """The events, their outbox rows and the relay's wake-up (NOTIFY, delivered at commit), in
        one statement that answers each stream's new version; `base_version` is added to the
        versions given (a stream's last version, or 0 when they are given whole)."""
        return f"""
            WITH appended AS (
              INSERT INTO "{schema}".events
                (event_id, stream_id, stream_version, event_type, trust_id, academy_id, data, metadata)
              SELECT e.event_id, e.stream_id, {base_version} + e.stream_version, e.event_type, e.trust_id,
                     e.academy_id, e.data::jsonb, e.metadata::jsonb
              FROM unnest(CAST(:event_ids AS uuid[]), CAST(:stream_ids AS text[]),
                          CAST(:versions AS int[]), CAST(:types AS text[]),
                          CAST(:trust_ids AS uuid[]), CAST(:academy_ids AS uuid[]),
                          CAST(:datas AS text[]), CAST(:metadatas AS text[]))
                   WITH ORDINALITY
                   AS e(event_id, stream_id, stream_version, event_type, trust_id, academy_id,
                        data, metadata, n)
              ORDER BY e.n
              RETURNING global_position, stream_id, stream_version
            ), queued AS (
              INSERT INTO "{schema}".outbox (global_position)
              SELECT global_position FROM appended
            )
            SELECT a.stream_id, max(a.stream_version), (SELECT pg_notify(:channel, '')) IS NULL
            FROM appended a GROUP BY a.stream_id
            """

    async def append(
        self,
        conn: AsyncConnection,
        stream_id: str,
        envelopes: Sequence[Envelope[Event]],
        expected_version: int | None = ANY_VERSION,
    ) -> int:
        """Append to one stream; returns its new version."""
        versions = await self.append_batch(conn, [PendingAppend(stream_id, envelopes, expected_version)])
        return versions[stream_id]

    async def append_batch(
        self, conn: AsyncConnection, appends: Sequence[PendingAppend], *, locked: Collection[str] = ()
    ) -> dict[str, int]:
        """Append to many streams in one statement (a whole class's ratings, say), all or nothing.

        Must run inside the caller's transaction. Raises StreamVersionConflict when a stream is
        not at the version its writer expected, or when a concurrent writer won the race.
        `locked`: streams whose locks an earlier statement of this transaction took already
        (`streams_locked_sql`); an any-version append to those alone sends no lock statement.
        """
        appends = [a for a in appends if a.envelopes]
        if not appends:
            return {}
        # Sealed before the locks: fetching a key may take a round trip to the consent service.
        datas = [await self.serialise(envelope) for pending in appends for envelope in pending.envelopes]
        streams = sorted({a.stream_id for a in appends})
        any_version = all(a.expected_version is None for a in appends)
        if any_version:
            if not set(streams) <= set(locked):
                await conn.execute(self._lock_sql, {"stream_ids": streams})
            current: dict[str, int] = {}
        elif all(a.expected_version is not None for a in appends):
            result = await conn.execute(self._lock_and_versions_sql, {"stream_ids": streams})
            current = {stream_id: version for stream_id, version in result if stream_id is not None}
        else:
            # Some streams take any version: their versions must be read after the locks.
            await conn.execute(self._lock_sql, {"stream_ids": streams})
            current = await self._current_versions(conn, streams)
        rows = _Rows(self.max_event_bytes)
        new_versions: dict[str, int] = {}
        serialised = iter(datas)
        for pending in appends:
            version = new_versions.get(pending.stream_id, current.get(pending.stream_id, 0))
            if pending.expected_version is not None and pending.expected_version != version:
                raise StreamVersionConflict(pending.stream_id, pending.expected_version, version)
            for envelope in pending.envelopes:
                version += 1
                rows.add(pending.stream_id, version, envelope, next(serialised))
            new_versions[pending.stream_id] = version
        try:
            result = await conn.execute(self._insert_any_version_sql if any_version else self._insert_sql,
                                        {**rows.params(), "channel": self.tables.notify_channel})
        except IntegrityError as error:
            if "events_stream_version_key" in str(error.orig):
                raise StreamVersionConflict(appends[0].stream_id, appends[0].expected_version, None) from None
            raise
        if any_version:
            new_versions = {stream_id: version for stream_id, version, _ in result}
        for event_type, count in Counter(rows.columns["types"]).items():
            events_appended.add(count, {"service": self.tables.schema, "event_type": event_type})
        return new_versions

    async def serialise(self, envelope: Envelope[Event]) -> str:
        """The event's data as stored and published: its personal fields sealed."""
        event = envelope.data
        if not (event.personal and event.subjects()):
            return event.model_dump_json()
        if self.sealing is None:
            raise SealingUnavailable(f"a {event.event_type} about a pupil cannot be written: no keyring is configured")
        return orjson.dumps(await self.sealing.seal(event, envelope.id, envelope.trust_id)).decode()

    async def read_stream(
        self, conn: AsyncConnection, stream_id: str, after_version: int = 0
    ) -> list[RecordedEvent]:
        events = self.tables.events
        result = await conn.execute(
            select(events)
            .where(events.c.stream_id == stream_id, events.c.stream_version > after_version)
            .order_by(events.c.stream_version)
        )
        return await self._opened(result.mappings())

    async def read_all(
        self, conn: AsyncConnection, after: Checkpoint = ORIGIN, limit: int = 1000, *, within: str | None = None
    ) -> list[RecordedEvent]:
        """The events after a checkpoint, in (transaction id, position) order, at most `limit` rows:
        what a catch-up reader reads next (see read_page; an erased pupil's events are left out)."""
        return (await self.read_page(conn, after, limit, within=within))[0]

    async def read_page(
        self, conn: AsyncConnection, after: Checkpoint = ORIGIN, limit: int = 1000, *, within: str | None = None
    ) -> tuple[list[RecordedEvent], Checkpoint | None]:
        """The events after `after`, in (transaction id, position) order, and the checkpoint of
        the last row read (None when there was none; a page of erased events is empty but moves
        the checkpoint on).

        Without `within`: only events of transactions below the horizon (every transaction older
        than the oldest one still running, see `horizon`), so an event that commits later can
        never fall behind the checkpoint: a reader that polls with the last checkpoint reads
        every committed event once, in one order. An event whose transaction is still open, or
        committed behind an older one still open, waits for the next poll.
        With `within` (a snapshot from `snapshot`): the events visible in that snapshot, for a
        one-shot reader (a rebuild) that pages through one moment of the store."""
        result = await conn.execute(select_after(self.tables.events, after, limit, within=within))
        rows = result.mappings().all()
        last = Checkpoint(rows[-1]["transaction_id"], rows[-1]["global_position"]) if rows else None
        return await self._opened(rows), last

    @staticmethod
    async def snapshot(conn: AsyncConnection) -> str:
        """The current snapshot (PostgreSQL's pg_snapshot, as text), for read_page(within=...)."""
        return str(await conn.scalar(text("SELECT CAST(pg_current_snapshot() AS text)")))

    async def _opened(self, rows: Iterable[Any]) -> list[RecordedEvent]:
        """The rows as events, opened; an event whose every subject pupil was erased is left out."""
        recorded = []
        for row in rows:
            envelope = await open_row(self.sealing, row["event_id"], row["event_type"], row["trust_id"],
                                      row["academy_id"], row["data"], row["metadata"])
            if envelope is not None:
                recorded.append(RecordedEvent(position=row["global_position"], stream_id=row["stream_id"],
                                              stream_version=row["stream_version"], envelope=envelope,
                                              recorded_at=row["recorded_at"], transaction_id=row["transaction_id"]))
        return recorded

    async def stream_version(self, conn: AsyncConnection, stream_id: str) -> int:
        return (await self._current_versions(conn, {stream_id})).get(stream_id, 0)

    async def _current_versions(self, conn: AsyncConnection, stream_ids: Iterable[str]) -> dict[str, int]:
        result = await conn.execute(self._versions_sql, {"stream_ids": list(stream_ids)})
        return dict(result.all())


# The horizon: the oldest transaction still running but the reader's own (every transaction below
# it has committed or rolled back), else the snapshot's xmax. pg_snapshot_xmin would count the
# reader's own transaction, so a rebuild that wrote before it read would never pass itself.
HORIZON = literal_column("""(SELECT coalesce((SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) x),
                                          pg_snapshot_xmax(pg_current_snapshot())))""", Xid8())


class _Snapshot(UserDefinedType[str]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "pg_snapshot"


def select_after(events: Table, after: Checkpoint, limit: int, *, within: str | None = None) -> Select[Any]:
    """The events table's rows after a checkpoint in (transaction id, position) order: below the
    horizon, or visible in the snapshot `within` (see EventStore.read_page)."""
    transaction_id, position = events.c.transaction_id, events.c.global_position
    later = tuple_(transaction_id, position) > tuple_(literal(after.transaction_id, Xid8()), literal(after.position))
    settled = (func.pg_visible_in_snapshot(transaction_id, cast(literal(within, Text()), _Snapshot()))
               if within is not None else transaction_id < HORIZON)
    return select(events).where(later, settled).order_by(transaction_id, position).limit(limit)


class _Rows:
    """Column arrays for the unnest() insert: one round trip for any number of events."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.columns: dict[str, list[Any]] = {
            name: []
            for name in ("event_ids", "stream_ids", "versions", "types", "trust_ids", "academy_ids", "datas", "metadatas")
        }

    def add(self, stream_id: str, version: int, envelope: Envelope[Event], data: str) -> None:
        c = self.columns
        c["event_ids"].append(envelope.id)
        c["stream_ids"].append(stream_id)
        c["versions"].append(version)
        c["types"].append(envelope.type)
        c["trust_ids"].append(envelope.trust_id)
        c["academy_ids"].append(envelope.academy_id)
        if len(data) > self.max_event_bytes:
            raise EventTooLarge(envelope.type, len(data), self.max_event_bytes)
        c["datas"].append(data)
        c["metadatas"].append(orjson.dumps(envelope_metadata(envelope, stream_id)).decode())

    def params(self) -> dict[str, list[Any]]:
        return self.columns


def envelope_metadata(envelope: Envelope[Event], stream_id: str) -> dict[str, str | None]:
    """What the events table keeps beside the data: the CloudEvents attributes and trace context."""
    return {
        "partition_key": envelope.subject or stream_id,
        "subject": envelope.subject,
        "source": envelope.source,
        "time": envelope.time.isoformat(),
        "correlation_id": str(envelope.correlation_id),
        "causation_id": str(envelope.causation_id) if envelope.causation_id else None,
        "traceparent": envelope.traceparent,
        "tracestate": envelope.tracestate,
    }


def envelope_from_row(
    event_id: UUID, event_type: str, trust_id: UUID, academy_id: UUID, data: Any, metadata: dict[str, Any]
) -> Envelope[Event]:
    model = model_for(event_type)
    return Envelope(
        data=model.model_validate(data),
        id=event_id,
        trust_id=trust_id,
        academy_id=academy_id,
        source=metadata["source"],
        time=datetime.fromisoformat(metadata["time"]),
        correlation_id=UUID(metadata["correlation_id"]),
        causation_id=UUID(metadata["causation_id"]) if metadata.get("causation_id") else None,
        traceparent=metadata.get("traceparent"),
        tracestate=metadata.get("tracestate"),
    )


async def open_row(
    sealing: EventSealing | None, event_id: UUID, event_type: str, trust_id: UUID, academy_id: UUID, data: Any,
    metadata: dict[str, Any],
) -> Envelope[Event] | None:
    """A stored event as an envelope, its personal fields opened with `sealing`; None when every
    pupil it is about was erased (their keys destroyed)."""
    event = await open_data(sealing, model_for(event_type), data, event_id, trust_id)
    if event is None:
        return None
    return Envelope(
        data=event,
        id=event_id,
        trust_id=trust_id,
        academy_id=academy_id,
        source=metadata["source"],
        time=datetime.fromisoformat(metadata["time"]),
        correlation_id=UUID(metadata["correlation_id"]),
        causation_id=UUID(metadata["causation_id"]) if metadata.get("causation_id") else None,
        traceparent=metadata.get("traceparent"),
        tracestate=metadata.get("tracestate"),
    )


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"{name!r} is not a safe schema name")
    return name
