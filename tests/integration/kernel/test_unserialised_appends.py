"""Issue 18 item 1: appends to one schema do not wait for each other, and a reader of the whole store
never skips an event whose transaction appended first and committed last.

The adversary is the interleaving itself: a long transaction (a bulk import, a slow command) takes a
low position, a short one takes a higher position and commits first. A reader that went by position
alone would read the short one's event, move its checkpoint past the long one's position, and never
see the long one's event. The reader here polls the way a catch-up reader does (read_page from its
last checkpoint, over and over) while the writers run, on the real PostgreSQL.

The horizon is the server's: another test run's transaction on the same server holds it back too,
so the readers poll until they have read what was committed (a wait, never a skip)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.events.envelope import topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.store.db import create_engine
from shared.store.event_store import ORIGIN, Checkpoint, EventStore, RecordedEvent, StreamVersionConflict
from shared.store.outbox import OutboxRelay
from shared.store.tables import KernelTables
from tests.integration.kernel.helpers import SEALING, observation, read_topic


class CatchUpReader:
    """A catch-up reader: its checkpoint, and every event it read, in the order it read them."""

    def __init__(self, engine: AsyncEngine, store: EventStore) -> None:
        self.engine, self.store = engine, store
        self.checkpoint = ORIGIN
        self.read: list[RecordedEvent] = []

    async def poll(self) -> int:
        async with self.engine.connect() as conn:
            batch, last = await self.store.read_page(conn, self.checkpoint, limit=500)
        if last is not None:
            assert last > self.checkpoint  # a checkpoint only moves forward
            self.checkpoint = last
        self.read += batch
        return len(batch)

    def ids(self) -> list[uuid.UUID]:
        return [e.envelope.id for e in self.read]

    async def until(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.read) < count and time.monotonic() < deadline:
            if not await self.poll():
                await asyncio.sleep(0.02)


async def test_a_long_transaction_that_appends_first_and_commits_last_is_not_skipped(engine, kernel):
    store = EventStore(kernel, sealing=SEALING)
    reader = CatchUpReader(engine, store)
    long_event, short_event = observation(), observation()
    long_appended, short_committed, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def long_transaction() -> None:
        async with engine.begin() as conn:
            await store.append(conn, "long", [long_event])
            long_appended.set()
            await release.wait()

    async def short_transaction() -> None:
        await long_appended.wait()
        async with engine.begin() as conn:
            await store.append(conn, "short", [short_event])
        short_committed.set()

    writers = asyncio.gather(long_transaction(), short_transaction())
    try:
        await asyncio.wait_for(short_committed.wait(), timeout=10)
        # The short one committed, the long one (below it) not yet: the interleaving that makes a
        # reader that goes by position alone skip.
        async with engine.connect() as conn:
            visible = (await conn.execute(text(f'SELECT event_id FROM "{kernel.schema}".events'))).scalars().all()
        assert visible == [short_event.id]
        for _ in range(20):  # the reader polls all through; it must not read past the open transaction
            await reader.poll()
            await asyncio.sleep(0.01)
        assert reader.read == []
    finally:
        release.set()
        await writers

    await reader.until(2)
    assert reader.ids() == [long_event.id, short_event.id]  # after its commit, in (transaction, position) order
    assert reader.read[0].position < reader.read[1].position
    await asyncio.sleep(0.1)
    assert await reader.poll() == 0  # and nothing twice


async def test_many_concurrent_writers_and_a_polling_reader_every_committed_event_read_exactly_once(
    stack_settings, kernel: KernelTables
):
    """20 connections, 120 transactions each, random short sleeps inside them, some rolled back, some
    losing an optimistic-concurrency race; streams shared between writers (any version) and each
    writer's own (expected version). The reader, polling all along, reads every committed event once
    and none that rolled back; each stream's versions run 1..n, in position order, in the outbox too."""
    writers, transactions = 20, 120
    engine = create_engine(stack_settings, pool_size=writers + 2)
    store = EventStore(kernel, sealing=SEALING)
    reader = CatchUpReader(engine, store)
    committed: set[uuid.UUID] = set()
    rolled_back: set[uuid.UUID] = set()
    conflicts = 0
    done = asyncio.Event()
    rng = random.Random(18)

    async def writer(n: int) -> None:
        nonlocal conflicts
        own, version = f"writer-{n}", 0
        for i in range(transactions):
            shared = f"shared-{rng.randrange(3)}"
            events = [observation() for _ in range(1 + i % 3)]
            extra = observation()
            try:
                async with engine.begin() as conn:
                    await asyncio.sleep(rng.random() * 0.004)
                    if i % 10 == 9:  # an expected version read beforehand on a shared stream: may lose the race
                        seen = await store.stream_version(conn, shared)
                        await asyncio.sleep(rng.random() * 0.004)
                        await store.append(conn, shared, [extra], expected_version=seen)
                    else:
                        await store.append(conn, shared, [extra])  # any version: never a conflict
                    await asyncio.sleep(rng.random() * 0.004)
                    version = await store.append(conn, own, events, expected_version=version)
                    await asyncio.sleep(rng.random() * 0.004)
                    if i % 17 == 0:
                        raise _RollBack()
            except _RollBack:
                rolled_back.update(e.id for e in [extra, *events])
                version = await _version(engine, store, own)
            except StreamVersionConflict:
                assert i % 10 == 9, "an append that takes any version conflicted"
                conflicts += 1
                rolled_back.update(e.id for e in [extra, *events])
                version = await _version(engine, store, own)
            else:
                committed.update(e.id for e in [extra, *events])

    async def poll_all_along() -> None:
        while not done.is_set():
            if not await reader.poll():
                await asyncio.sleep(rng.random() * 0.01)

    try:
        polling = asyncio.create_task(poll_all_along())
        await asyncio.gather(*[writer(n) for n in range(writers)])
        done.set()
        await polling
        await reader.until(len(committed))
        async with engine.connect() as conn:
            stored = (await conn.execute(text(
                f'SELECT e.stream_id, e.stream_version, e.global_position, o.global_position IS NOT NULL '
                f'FROM "{kernel.schema}".events e LEFT JOIN "{kernel.schema}".outbox o USING (global_position) '
                f'ORDER BY e.global_position'))).all()
    finally:
        await engine.dispose()

    ids = reader.ids()
    assert len(ids) == len(set(ids)) == len(committed), "an event read twice, or one never read"
    assert set(ids) == committed and not set(ids) & rolled_back
    assert [e.checkpoint for e in reader.read] == sorted(e.checkpoint for e in reader.read)
    assert len(stored) == len(committed) and all(queued for *_, queued in stored)
    by_stream: dict[str, list[int]] = {}
    for stream_id, stream_version, _, _ in stored:  # in position order, which the relay publishes in
        by_stream.setdefault(stream_id, []).append(stream_version)
    for stream_id, versions in by_stream.items():
        assert versions == list(range(1, len(versions) + 1)), stream_id
    for stream_id in by_stream:  # and the reader read each stream in its version order
        assert [e.stream_version for e in reader.read if e.stream_id == stream_id] == by_stream[stream_id]
    assert rolled_back and len(committed) > writers * transactions  # the test did what it says
    print(f"{len(committed)} events committed, {len(rolled_back)} rolled back, {conflicts} conflicts")


class _RollBack(Exception):
    pass


async def _version(engine: AsyncEngine, store: EventStore, stream: str) -> int:
    async with engine.connect() as conn:
        return await store.stream_version(conn, stream)


async def test_an_open_append_does_not_block_another_append_in_the_same_schema(engine, kernel):
    """With the schema's append lock, the second append waited for the first transaction's end.
    Now only an append to the same stream waits (its version follows the first's)."""
    store = EventStore(kernel, sealing=SEALING)
    opened, release = asyncio.Event(), asyncio.Event()

    async def holding_an_append_open() -> None:
        async with engine.begin() as conn:
            await store.append(conn, "first", [observation()])
            opened.set()
            await release.wait()

    holder = asyncio.create_task(holding_an_append_open())

    async def append_and_commit(stream: str) -> int:
        async with engine.begin() as conn:
            return await store.append(conn, stream, [observation()])

    try:
        await asyncio.wait_for(opened.wait(), timeout=10)
        # Another stream: commits while the first transaction is still open.
        assert await asyncio.wait_for(append_and_commit("second"), timeout=5) == 1
        assert not holder.done()
        # The same stream: waits for the first transaction, then numbers its event after it.
        same = asyncio.create_task(append_and_commit("first"))
        await asyncio.sleep(0.3)
        assert not same.done()
    finally:
        release.set()
        await holder
    assert await asyncio.wait_for(same, timeout=10) == 2
    async with engine.connect() as conn:
        assert [e.stream_version for e in await store.read_stream(conn, "first")] == [1, 2]


@pytest.mark.parametrize("batch", [1, 3])
async def test_two_appends_expecting_the_same_version_still_conflict(engine, kernel, batch):
    """Optimistic concurrency as before: of two writers that read version 0 and both append, one
    commits and the other gets StreamVersionConflict, whichever waited for the other's lock."""
    store = EventStore(kernel, sealing=SEALING)
    first_in, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with engine.begin() as conn:
            await store.append(conn, "s", [observation() for _ in range(batch)], expected_version=0)
            first_in.set()
            await release.wait()

    async def second() -> None:
        await first_in.wait()
        async with engine.begin() as conn:
            await store.append(conn, "s", [observation()], expected_version=0)

    task = asyncio.create_task(first())
    racing = asyncio.create_task(second())
    await asyncio.sleep(0.3)
    release.set()
    await task
    with pytest.raises(StreamVersionConflict):
        await racing
    async with engine.connect() as conn:
        assert await store.stream_version(conn, "s") == batch


def test_checkpoints_order_by_transaction_then_position() -> None:
    assert Checkpoint(1, 900) < Checkpoint(2, 5) < Checkpoint(2, 6) and Checkpoint(0, 1) > ORIGIN


async def test_the_relay_running_beside_concurrent_appends_publishes_each_stream_in_version_order(
    engine, kernel, publisher, stack_settings, topic_prefix
):
    """Eight writers append to four streams (any version, and expected versions that may lose),
    while the relay publishes all along; on Kafka every stream's events are there once, in their
    version order (a stream's events share a partition key, so one partition holds them)."""
    store = EventStore(kernel, sealing=SEALING)
    relay = OutboxRelay(engine, kernel, publisher, topic_prefix=topic_prefix)
    pupils = {f"pupil-{n}": uuid.uuid4() for n in range(4)}
    done = asyncio.Event()
    rng = random.Random(81)

    async def writer(n: int) -> None:
        for i in range(30):
            stream = rng.choice(list(pupils))
            try:
                async with engine.begin() as conn:
                    expected = await store.stream_version(conn, stream) if i % 4 == 0 else None
                    await asyncio.sleep(rng.random() * 0.005)
                    await store.append(conn, stream, [observation(pupils[stream]) for _ in range(1 + i % 2)],
                                       expected_version=expected)
                    await asyncio.sleep(rng.random() * 0.005)
            except StreamVersionConflict:
                pass

    async def relay_all_along() -> None:
        while not done.is_set():
            if not await relay.publish_pending():
                await asyncio.sleep(0.005)

    relaying = asyncio.create_task(relay_all_along())
    await asyncio.gather(*[writer(n) for n in range(8)])
    done.set()
    await relaying
    await relay.drain()
    async with engine.connect() as conn:
        stored = {str(event_id): (stream_id, version) for event_id, stream_id, version in (await conn.execute(text(
            f'SELECT event_id, stream_id, stream_version FROM "{kernel.schema}".events'))).all()}
    records = await read_topic(kafka_options(stack_settings, ADMIN), topic_for("assessment", topic_prefix),
                               expected=len(stored))
    published: dict[str, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        stream_id, version = stored[dict(record.headers)["ce_id"].decode()]
        published.setdefault(stream_id, []).append(version)
    assert sum(map(len, published.values())) == len(stored)
    for stream_id, versions in published.items():
        assert versions == list(range(1, len(versions) + 1)), stream_id
