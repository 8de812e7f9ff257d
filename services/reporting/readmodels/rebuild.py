"""Rebuilding the read models from history while the service keeps running.

1. Fresh shadow tables (`rm_*_shadow`, same columns and keys as the live ones), and the
   tombstones: every PupilErased and RetentionExpired on the consent topic (what the live erasure
   consumer did not dead-letter), the same events the erasure register was made from.
2. Replay: every partition of the assessment and planning topics from the beginning up to the end
   offsets taken at the start, folded in memory with the projections' effects and written with
   COPY (bulk.py: behind the tombstones, nothing about an erased pupil, or of an expired category,
   is applied), skipping what the live consumer dead-lettered and refusing what it refuses (an
   event that claims another trust for a pupil or an academy known by then). Then the service's
   grants and the tenant policy on the shadow tables (COPY refuses a table under the policy).
3. Swap, in one transaction: lock the live tables against writes (readers carry on), read the
   tombstones published since step 1 and purge their pupils from the shadow tables, replay what
   arrived since step 2 into the shadow tables through the live consumer's handlers, rename
   live → old, shadow → live, drop the old.
   The live consumer, blocked on the lock meanwhile, resumes on the new tables; an event it
   applies again is a no-op (every row is keyed by its event's natural key). An erasure the live
   consumer applied before the lock was on Kafka before it: step 3 finds it; one applied after
   the lock deletes from the new tables. Either way an erased pupil never comes back.

The DDL runs as the rebuild role, `flourish_reporting_rebuild` (SET ROLE: the connection is that
role's own, or the owner's, who is its member), which owns the read-model tables and nothing else:
it can make and swap them, and cannot touch the audit ledger (tests/integration/roles). The
reporting service's role cannot do either: it owns nothing. Each shadow table gets the service
role's grants before it is swapped in, as the migration gave the live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError
from sqlalchemy import Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.reporting.readmodels.bulk import COPY_ROWS, Fold, copy
from services.reporting.readmodels.erasure import Remembered, keep_on_roster, purge
from services.reporting.readmodels.projections import Batch, batch_handlers
from services.reporting.readmodels.tables import NAMES, SCHEMA, SHADOW, tables
from shared.datakeys import DataKeyClient, DataKeyRefused, PupilKeyring, SealedFieldUnreadable, UnknownDataKey
from shared.events.envelope import Envelope, InvalidMessage, decode, decode_wire, topic_for
from shared.events.sealing import EventSealing, is_sealed
from shared.messaging.clients import kafka_options
from shared.messaging.dead_letters import dead_lettered_sources
from shared.messaging.provenance import wrong_producer
from shared.messaging.tenancy import TenancyGuard, TenantMismatch
from shared.messaging.topics import dead_letter_topic
from shared.peers import ServiceTokens
from shared.settings import Settings
from shared.store import privileges
from shared.store.db import create_engine
from shared.tenancy import row_level_security_statements

CONTEXTS = ("assessment", "planning")
TOMBSTONES = "consent"  # where PupilErased and RetentionExpired are published
_LOCK_KEY = 0x52_4D_52_42  # "RMRB": one rebuild at a time per database
_CHUNK = 1000
# How long the broker holds a fetch that finds nothing new (aiokafka's default is 500 ms). The
# readers stop at end offsets they asked for, and a ListOffsets sent while a fetch is held waits
# behind it on the connection: with the default each `end_offsets` at the log's end took ~0.5 s.
_FETCH_WAIT_MS = 10
REBUILD_ROLE = privileges.rebuild_role(SCHEMA)
_AS_REBUILD_ROLE = f'SET LOCAL ROLE "{REBUILD_ROLE}"'


class RebuildRunning(RuntimeError):
    pass


@dataclass(frozen=True)
class RebuildResult:
    events: int  # events read from the topics
    applied: int  # of which read-model events
    seconds: float
    replay_seconds: float = 0.0  # of which replaying the history into the shadow tables (no start, no swap)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def rebuild(settings: Settings, engine: AsyncEngine | None = None,
                  keyring: PupilKeyring | None = None, *, bulk: bool = True) -> RebuildResult:
    """Rebuild every read model from the topics' history and swap it in atomically.

    Sealed events are opened with `keyring` (by default the consent service's data keys, as the
    reporting service): an event about an erased pupil (key destroyed) is not replayed, so a
    rebuild never brings an erased pupil's scores, plans or sessions back; a key service that
    cannot be reached fails the rebuild (DataKeyUnavailable), never skips.

    `bulk` False replays the history through the projections' statements, as the swap replays what
    arrived meanwhile: the reference the bulk replay is tested against (test_bulk_rebuild.py)."""
    own_engine = engine is None
    engine = engine or create_engine(settings)
    own_keys = keyring is None
    keys: PupilKeyring = keyring or DataKeyClient(settings.consent_url, ServiceTokens(settings, "reporting").for_trust)
    started = time.perf_counter()
    try:
        async with engine.connect() as guard:
            if not await guard.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}):
                raise RebuildRunning("another rebuild of the read models is running")
            try:
                await _create_shadow(engine)
                shadow = tables(SHADOW)
                graves = _Tombstones(settings)
                # Each pupil's key asked for once per rebuild, kept in memory until it ends (an erased
                # pupil's as None: their events stay skipped).
                reader = _Reader(settings, batch_handlers(shadow, graves.remembered), shadow.pupils,
                                 EventSealing(keys, remember=True))
                # Both readers start at once (each reads its dead letters first); stopped either way.
                starts = await asyncio.gather(graves.start(), reader.start(), return_exceptions=True)
                try:
                    for outcome in starts:
                        if isinstance(outcome, BaseException):
                            raise outcome
                    await graves.catch_up()
                    # The history, folded in memory and written with COPY (bulk.py).
                    fold = Fold(shadow, graves.remembered) if bulk else None
                    replay_started = time.perf_counter()
                    with _collector_paused():
                        async with engine.begin() as conn:
                            if fold is None:
                                await keep_on_roster(conn, shadow, graves.remembered.roster.values())
                            else:
                                fold.keep_on_roster(graves.remembered.roster.values())
                            await reader.replay(conn, await reader.end_offsets(), fold)
                    replay_seconds = time.perf_counter() - replay_started
                    await _secure_shadow(engine)
                    await _swap(engine, reader, graves)
                finally:
                    await reader.stop()
                    await graves.stop()
            finally:
                await guard.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                await guard.commit()
        return RebuildResult(reader.read, reader.applied, time.perf_counter() - started, replay_seconds)
    finally:
        if own_keys and isinstance(keys, DataKeyClient):
            await keys.aclose()
        if own_engine:
            await engine.dispose()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the replay: the fold holds every key written (millions
    of objects), which each full collection would walk again, for nothing — the replay makes no
    cycles worth collecting (reference counting frees its garbage). It halved the replay's rate.
    The rebuild runs in a process of its own (`flourish reporting rebuild`); restored after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def _create_shadow(engine: AsyncEngine) -> None:
    # Nobody but their owner (the rebuild role) and superusers may use them until _secure_shadow.
    async with engine.begin() as conn:
        await conn.execute(text(_AS_REBUILD_ROLE))
        for name in NAMES:
            await conn.execute(text(f'DROP TABLE IF EXISTS "{SCHEMA}"."{name}{SHADOW}"'))
            await conn.execute(text(f'CREATE TABLE "{SCHEMA}"."{name}{SHADOW}" (LIKE "{SCHEMA}"."{name}" INCLUDING ALL)'))


async def _secure_shadow(engine: AsyncEngine) -> None:
    """The service's grants and the tenant policy on the shadow tables, once the bulk replay has
    written them: COPY FROM refuses a table under row-level security (FORCE binds its owner too)."""
    service_role = privileges.service_role(SCHEMA)
    async with engine.begin() as conn:
        await conn.execute(text(_AS_REBUILD_ROLE))
        for name in NAMES:
            # LIKE copies no privileges either: the service's, as the migration step grants them.
            await conn.execute(text(f'GRANT {", ".join(sorted(privileges.READ_WRITE))} '
                                    f'ON "{SCHEMA}"."{name}{SHADOW}" TO "{service_role}"'))
        # LIKE copies no row-level security: the shadow becomes the live table, so it gets the policy
        # its declaration (tables.py: per_trust) derives, as the migration gave the live one.
        for statement in row_level_security_statements(tables(SHADOW).all()):
            await conn.execute(text(statement))


async def _swap(engine: AsyncEngine, reader: _Reader, graves: _Tombstones, attempts: int = 10) -> None:
    live = ", ".join(f'"{SCHEMA}"."{name}"' for name in NAMES)
    for attempt in range(1, attempts + 1):
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                await conn.execute(text(_AS_REBUILD_ROLE))
                # EXCLUSIVE: the live consumer's writes wait, readers do not.
                await conn.execute(text(f"LOCK TABLE {live} IN EXCLUSIVE MODE"))
                # Erasures published since the replay began: their pupils leave the shadow tables
                # (the replay goes on behind every tombstone known so far).
                shadow = tables(SHADOW)
                graves.unpurged += await graves.catch_up()  # kept until a swap commits
                for pupil_id, category in graves.unpurged:
                    await purge(conn, shadow, None, pupil_id, category)
                await keep_on_roster(conn, shadow, graves.remembered.roster.values())
                await reader.replay(conn, await reader.end_offsets())
                for name in NAMES:
                    await conn.execute(text(f'ALTER TABLE "{SCHEMA}"."{name}" RENAME TO "{name}_old"'))
                    await conn.execute(text(f'ALTER TABLE "{SCHEMA}"."{name}{SHADOW}" RENAME TO "{name}"'))
                    await conn.execute(text(f'DROP TABLE "{SCHEMA}"."{name}_old"'))
            return
        except DBAPIError as error:
            # A deadlock with, or a lock timeout behind, the live consumer: nothing happened; again.
            if attempt == attempts or getattr(error.orig, "sqlstate", None) not in ("40P01", "55P03"):
                raise
            await asyncio.sleep(0.1 * attempt)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """A topic's partitions (none when it does not exist yet: nothing was ever published)."""
    found = consumer.partitions_for_topic(topic)
    if not found:
        # aiokafka has no public refresh of its cluster metadata.
        await consumer._client.force_metadata_update()  # noqa: SLF001
        found = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(found or ())]


class _Tombstones:
    """Reads the consent topic for PupilErased and RetentionExpired, without a consumer group; each
    `catch_up` reads to the end offsets of the moment and says which (pupil, category) it found."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topic_for(TOMBSTONES, settings.topic_prefix)
        self.remembered = Remembered()
        self.unpurged: list[tuple[UUID, str]] = []  # found at a swap that has not committed yet
        self.skipped: set[tuple[str, int, int]] = set()
        self.consumer = AIOKafkaConsumer(
            **kafka_options(settings, "reporting"), enable_auto_commit=False, group_id=None,
            auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_wait_ms=_FETCH_WAIT_MS,
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        # What the live erasure consumer dead-lettered, the register never had.
        self.skipped = await dead_lettered_sources(
            kafka_options(self.settings, "reporting"), dead_letter_topic("reporting.erasure", self.settings.topic_prefix))
        await self.consumer.start()
        self.partitions = await partitions_of(self.consumer, self.topic)
        self.consumer.assign(self.partitions)
        if self.partitions:
            await self.consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def catch_up(self) -> list[tuple[UUID, str]]:
        until = await self.consumer.end_offsets(self.partitions) if self.partitions else {}
        found: list[tuple[UUID, str]] = []
        pending = {tp for tp, end in until.items() if await self.consumer.position(tp) < end}
        while pending:
            batches = await self.consumer.getmany(*pending, timeout_ms=1000, max_records=20_000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= until[tp]:
                        self.consumer.seek(tp, until[tp])
                        break
                    if (record.topic, record.partition, record.offset) in self.skipped:
                        continue
                    try:
                        envelope = decode(record.headers, record.value)
                    except InvalidMessage:
                        continue
                    if (grave := self.remembered.add(envelope)) is not None:
                        found.append(grave)
            pending = {tp for tp in pending if await self.consumer.position(tp) < until[tp]}
        return found


class _Reader:
    """Reads the contexts' topics partition by partition, without a consumer group."""

    def __init__(self, settings: Settings, handlers: dict[Any, Batch], roster: Table, sealing: EventSealing) -> None:
        self.sealing = sealing
        self.topics = [topic_for(context, settings.topic_prefix) for context in CONTEXTS]
        self.handlers = handlers
        self.tenancy = TenancyGuard(roster)
        self.settings = settings
        self.skipped: set[tuple[str, int, int]] = set()
        self.consumer = AIOKafkaConsumer(
            **kafka_options(settings, "reporting"), enable_auto_commit=False, group_id=None,
            auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=_FETCH_WAIT_MS,
        )
        self.partitions: list[TopicPartition] = []
        self.read = 0
        self.applied = 0

    async def start(self) -> None:
        # What the live consumer dead-lettered, the read model never had (the consumer group is
        # the service's name and the consumer's: reporting.readmodels).
        self.skipped = await dead_lettered_sources(
            kafka_options(self.settings, "reporting"), dead_letter_topic("reporting.readmodels", self.settings.topic_prefix))
        await self.consumer.start()
        for topic in self.topics:
            self.partitions += await partitions_of(self.consumer, topic)
        self.consumer.assign(self.partitions)
        if self.partitions:
            await self.consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return await self.consumer.end_offsets(self.partitions) if self.partitions else {}

    async def replay(self, conn: AsyncConnection, until: dict[TopicPartition, int], fold: Fold | None = None) -> None:
        """Read every partition up to `until` and apply it: into `fold` (tables still empty, its rows
        written with COPY while the next batch is decoded), or through the projections' statements
        (the swap's catch-up)."""
        pending = {tp for tp, end in until.items() if await self.consumer.position(tp) < end}
        writing: asyncio.Task[None] | None = None  # one COPY at a time on the connection
        try:
            while pending:
                batches = await self.consumer.getmany(*pending, timeout_ms=1000, max_records=20_000)
                envelopes = await self._envelopes(batches, until)
                if fold is None:
                    await self._apply(conn, envelopes)
                else:
                    fold.add(envelopes)
                    if fold.pending() >= COPY_ROWS:
                        if writing is not None:
                            await writing
                        writing = asyncio.create_task(copy(conn, fold.take(final=False)))
                pending = {tp for tp in pending if await self.consumer.position(tp) < until[tp]}
            if fold is not None:
                if writing is not None:
                    await writing
                writing = None
                await copy(conn, fold.take(final=True))
                self.applied += fold.applied
                fold.applied = 0
        finally:
            if writing is not None and not writing.done():
                writing.cancel()  # the transaction is rolled back: nothing of it stays
                with contextlib.suppress(BaseException):
                    await writing

    async def _envelopes(self, batches: dict[TopicPartition, list[Any]], until: dict[TopicPartition, int]) -> list[Envelope]:
        """A batch's records up to `until`, decoded and opened, without what the live consumer
        dead-lettered or would refuse as invalid."""
        envelopes: list[Envelope] = []
        handlers, skipped = self.handlers, self.skipped
        for tp, records in batches.items():
            end = until[tp]
            if records and records[-1].offset >= end:
                # Read past the mark: hand the rest back to the next replay (the swap's).
                records = [record for record in records if record.offset < end]
                self.consumer.seek(tp, end)
            self.read += len(records)
            for record in records:
                if skipped and (record.topic, record.partition, record.offset) in skipped:
                    continue
                try:
                    wire = decode_wire(record.headers, record.value)
                    if wire.model not in handlers or wrong_producer(
                            record.topic, wire.type, wire.model.context, wire.source, self.settings.topic_prefix):
                        continue  # not read-model data, or not from the topic's producer (dead-lettered live)
                    if is_sealed(wire.data):  # open_data, with the keyring it always has
                        event = await self.sealing.open(wire.model, wire.data, wire.id, wire.trust_id)
                    else:  # as open_data reads a payload from before sealing, without the await
                        event = wire.model.model_validate(wire.data)
                except (InvalidMessage, ValidationError, SealedFieldUnreadable, DataKeyRefused, UnknownDataKey):
                    continue  # the live consumer dead-letters it; a read model never had it
                if event is not None:  # None: every pupil it is about was erased
                    envelopes.append(wire.envelope(event))
        return envelopes

    async def _apply(self, conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
        # Runs of one type, in order, in chunks (a statement's parameters are limited).
        run: list[Envelope] = []
        for envelope in envelopes:
            if run and (type(run[-1].data) is not type(envelope.data) or len(run) >= _CHUNK):
                await self._apply_run(conn, run)
                run = []
            run.append(envelope)
        if run:
            await self._apply_run(conn, run)

    async def _apply_run(self, conn: AsyncConnection, run: list[Envelope]) -> None:
        handler = self.handlers[type(run[0].data)]
        try:
            await self.tenancy.refuse_other_tenants(conn, run)
        except TenantMismatch:
            # As the live consumer does: one at a time, each checked against what came before it.
            for envelope in run:
                try:
                    await self.tenancy.refuse_other_tenants(conn, [envelope])
                except TenantMismatch:
                    continue  # the live consumer dead-lettered it; a read model never had it
                await handler(conn, [envelope])
                self.applied += 1
            return
        await handler(conn, run)
        self.applied += len(run)
