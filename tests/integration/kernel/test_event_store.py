"""The event store on the real PostgreSQL: versions, concurrency, positions, tenancy."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shared.store.event_store import NO_STREAM, EventStore, PendingAppend, StreamVersionConflict
from tests.integration.kernel.helpers import ACADEMY, SEALING, TRUST, observation


async def test_two_writers_racing_on_one_stream_exactly_one_wins(engine, kernel):
    store = EventStore(kernel, sealing=SEALING)
    stream = f"pupil-{uuid.uuid4()}"
    start = asyncio.Event()

    async def writer() -> str:
        async with engine.begin() as conn:
            await start.wait()
            await store.append(conn, stream, [observation()], expected_version=NO_STREAM)
        return "won"

    tasks = [asyncio.create_task(writer()) for _ in range(2)]
    await asyncio.sleep(0.05)
    start.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert sorted(type(o).__name__ if isinstance(o, Exception) else o for o in outcomes) == [
        "StreamVersionConflict",
        "won",
    ]
    async with engine.connect() as conn:
        assert await store.stream_version(conn, stream) == 1


async def test_appends_that_take_any_version_racing_on_one_stream_all_land_numbered_in_commit_order(engine, kernel):
    """Appends without an expected version number their events in the insert itself (one round
    trip fewer): racing writers all succeed, versions run 1..n without a gap or a repeat, each in
    the outbox, positions in version order, and each writer is told the version it reached."""
    store = EventStore(kernel, sealing=SEALING)
    stream = f"audit-{uuid.uuid4()}"
    start = asyncio.Event()
    async with engine.begin() as conn:  # a stream that already has events: numbering continues
        assert await store.append(conn, stream, [observation()]) == 1

    async def writer(events: int) -> int:
        async with engine.begin() as conn:
            await start.wait()
            return await store.append(conn, stream, [observation() for _ in range(events)])

    tasks = [asyncio.create_task(writer(1 + n % 3)) for n in range(8)]
    await asyncio.sleep(0.05)
    start.set()
    reached = await asyncio.gather(*tasks)

    async with engine.connect() as conn:
        stored = await store.read_stream(conn, stream)
        queued = await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".outbox'))
    assert [e.stream_version for e in stored] == list(range(1, len(stored) + 1))
    assert len(stored) == 1 + sum(1 + n % 3 for n in range(8)) == queued
    assert [e.position for e in stored] == sorted(e.position for e in stored)
    assert sorted(reached) == sorted(set(reached)) and max(reached) == len(stored)


async def test_a_batch_of_streams_taking_any_version_answers_each_streams_new_version(engine, kernel):
    store = EventStore(kernel, sealing=SEALING)
    async with engine.begin() as conn:
        await store.append(conn, "b", [observation(), observation()])
        versions = await store.append_batch(conn, [
            PendingAppend("a", [observation()]), PendingAppend("b", [observation()]),
            PendingAppend("a", [observation(), observation()]),
        ])
    assert versions == {"a": 3, "b": 3}
    async with engine.connect() as conn:
        assert [e.stream_version for e in await store.read_stream(conn, "a")] == [1, 2, 3]
        assert [e.stream_version for e in await store.read_stream(conn, "b")] == [1, 2, 3]


async def test_a_stale_expected_version_is_a_clear_conflict_and_writes_nothing(engine, kernel):
    store = EventStore(kernel, sealing=SEALING)
    async with engine.begin() as conn:
        await store.append(conn, "s", [observation(), observation()], expected_version=NO_STREAM)

    with pytest.raises(StreamVersionConflict, match="stream 's' is at version 2, the writer expected 1"):
        async with engine.begin() as conn:
            await store.append(conn, "s", [observation()], expected_version=1)

    async with engine.connect() as conn:
        assert [e.stream_version for e in await store.read_stream(conn, "s")] == [1, 2]
        assert await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".outbox')) == 2


async def test_read_stream_and_read_all_return_what_was_appended_in_order(engine, kernel):
    store = EventStore(kernel, sealing=SEALING)
    first, second, third = observation(), observation(), observation()
    async with engine.begin() as conn:
        await store.append_batch(
            conn, [PendingAppend("a", [first, second], NO_STREAM), PendingAppend("b", [third], NO_STREAM)]
        )
    async with engine.connect() as conn:
        stream_a = await store.read_stream(conn, "a")
        everything = await store.read_all(conn, within=await store.snapshot(conn))
        after_first = await store.read_all(conn, everything[0].checkpoint, within=await store.snapshot(conn))

    assert [e.envelope for e in stream_a] == [first, second]
    assert [e.envelope for e in everything] == [first, second, third]
    assert [e.position for e in everything] == sorted(e.position for e in everything)
    assert [e.envelope for e in after_first] == [second, third]


async def test_a_rolled_back_append_leaves_no_event_and_no_outbox_row(engine, kernel):
    store = EventStore(kernel, sealing=SEALING)

    async def append_then_fail() -> None:
        async with engine.begin() as conn:
            await store.append(conn, "s", [observation()])
            raise RuntimeError("the command failed after appending")

    with pytest.raises(RuntimeError, match="the command failed after appending"):
        await append_then_fail()
    async with engine.connect() as conn:
        assert await store.read_all(conn, within=await store.snapshot(conn)) == []
        assert await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".outbox')) == 0


async def test_every_stored_event_carries_its_tenancy(engine, kernel):
    store = EventStore(kernel, sealing=SEALING)
    async with engine.begin() as conn:
        await store.append(conn, "s", [observation()])
    async with engine.connect() as conn:
        row = (await conn.execute(text(f'SELECT trust_id, academy_id FROM "{kernel.schema}".events'))).one()
    assert tuple(row) == (TRUST, ACADEMY)

    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    f'INSERT INTO "{kernel.schema}".events (event_id, stream_id, stream_version, event_type, '
                    "trust_id, academy_id, data, metadata) VALUES (gen_random_uuid(), 'x', 1, 't', "
                    "gen_random_uuid(), NULL, '{}', '{}')"
                )
            )


async def test_an_event_kafka_could_not_carry_is_refused_at_append_and_nothing_is_written(engine, kernel):
    from shared.store.event_store import EventTooLarge

    store = EventStore(kernel, max_event_bytes=2_000, sealing=SEALING)
    with pytest.raises(EventTooLarge, match="over the 2000-byte limit"):
        async with engine.begin() as conn:
            await store.append_batch(
                conn, [PendingAppend("a", [observation()]), PendingAppend("b", [observation(statement_id="x" * 3_000)])]
            )
    async with engine.connect() as conn:
        assert await store.read_all(conn, within=await store.snapshot(conn)) == []


async def test_appends_are_counted_by_event_type(engine, kernel):
    from tests.conftest import counter

    store = EventStore(kernel, sealing=SEALING)
    event = observation()
    appended = counter("flourish_events_appended", service=kernel.schema)
    of_its_type = counter("flourish_events_appended", service=kernel.schema, event_type=event.type)
    async with engine.begin() as conn:
        await store.append(conn, "s", [event, observation()])
    assert appended.delta() == of_its_type.delta() == 2
