"""Event store appends beside raw asyncpg inserts of the same JSON payloads.

* ``event_store.append.single``: one ObservationRecorded per transaction through
  ``EventStore.append`` on the kernel's engine (``create_engine``: SQLAlchemy on asyncpg), several
  tasks at once. Baseline ``asyncpg.insert.single``: one ``INSERT`` per transaction on a raw
  asyncpg connection per task, into a plain table (id uuid primary key, stream text, data jsonb).
* ``event_store.append.batched``: 500 events over 100 streams per transaction through
  ``EventStore.append_batch``. Baseline ``asyncpg.executemany``: the same 500 rows with
  ``executemany`` into the plain table, one transaction per batch.
* ``sealing.append.batched``: the batched append with the ratings sealed, beside the same events
  with nothing sealed (``event_store.append.batched.unsealed``), in the same run.

The event store's figures seal the ratings, as the services do (keys held in memory, as a
service's key cache holds them once fetched).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy import text

from bench.common import (
    HIGHER_IS_BETTER,
    SEALING,
    Figure,
    asyncpg_dsn,
    fresh_schema,
    info,
    observation,
    run_workers,
    stream_of,
)
from shared.events.envelope import Envelope
from shared.settings import Settings
from shared.store.db import create_engine
from shared.store.event_store import EventStore, PendingAppend


@dataclass(frozen=True)
class StoreScale:
    single_events: int = 2000
    single_concurrency: int = 4
    single_warmup: int = 200
    batches: int = 40
    batch_size: int = 500
    streams_per_batch: int = 100
    batch_warmup: int = 3


def _plain_table_sql(schema: str) -> str:
    return f'CREATE TABLE "{schema}".plain (id uuid PRIMARY KEY, stream text NOT NULL, data jsonb NOT NULL)'


def _insert_sql(schema: str) -> str:
    return f'INSERT INTO "{schema}".plain (id, stream, data) VALUES ($1, $2, $3::jsonb)'


async def append_single(settings: Settings, scale: StoreScale) -> Figure:
    concurrency = scale.single_concurrency
    engine = create_engine(settings, pool_size=concurrency)
    try:
        async with fresh_schema(engine, "single") as tables:
            store = EventStore(tables, sealing=SEALING)
            pupils = [uuid.uuid4() for _ in range(200)]
            total = scale.single_warmup + scale.single_events
            work = [(stream_of(pupils[i % len(pupils)]), observation(pupils[i % len(pupils)])) for i in range(total)]
            rows = [(env.id, stream, env.data.model_dump_json()) for stream, env in work]
            payload = sum(len(data) for _, _, data in rows) / len(rows)
            info(f"append.single: {scale.single_events} events (+{scale.single_warmup} warm-up), "
                 f"{concurrency} tasks, one event per transaction, payload {payload:.0f} B of JSON")

            async def append(item: tuple[str, Envelope]) -> None:
                stream, envelope = item
                async with engine.begin() as conn:
                    await store.append(conn, stream, [envelope])

            await run_workers(work[: scale.single_warmup], concurrency, append)
            t0 = time.perf_counter()
            await run_workers(work[scale.single_warmup :], concurrency, append)
            ours = scale.single_events / (time.perf_counter() - t0)
            info(f"append.single: event store {ours:,.0f} events/s")

            # Baseline: same server, same payloads, a plain table, one asyncpg connection per task.
            async with engine.begin() as conn:
                await conn.execute(text(_plain_table_sql(tables.schema)))
            sql = _insert_sql(tables.schema)
            connections = [await asyncpg.connect(asyncpg_dsn(settings)) for _ in range(concurrency)]
            try:
                free = list(connections)

                async def insert(row: tuple[uuid.UUID, str, str]) -> None:
                    conn = free.pop()
                    try:
                        async with conn.transaction():
                            await conn.execute(sql, *row)
                    finally:
                        free.append(conn)

                await run_workers(rows[: scale.single_warmup], concurrency, insert)
                t0 = time.perf_counter()
                await run_workers(rows[scale.single_warmup :], concurrency, insert)
                raw = scale.single_events / (time.perf_counter() - t0)
            finally:
                for conn in connections:
                    await conn.close()
            info(f"append.single: raw asyncpg {raw:,.0f} inserts/s")
    finally:
        await engine.dispose()
    return Figure("event_store.append.single", ours, "events/s", "asyncpg.insert.single", raw, HIGHER_IS_BETTER)


def _batch(scale: StoreScale, sealed: bool = True) -> list[PendingAppend]:
    """One class's worth of ratings: batch_size events spread over streams_per_batch pupils."""
    per_stream = scale.batch_size // scale.streams_per_batch
    appends = []
    for _ in range(scale.streams_per_batch):
        pupil = uuid.uuid4()
        appends.append(PendingAppend(stream_of(pupil), [observation(pupil, sealed=sealed) for _ in range(per_stream)]))
    return appends


async def append_batched_sealing(settings: Settings, scale: StoreScale) -> Figure:
    """`sealing.append.batched`: the batched append with the ratings sealed (one AES-GCM per event
    under the pupil's key, keys as a service holds them once fetched), beside the same append of
    the same events with nothing sealed, in one schema, alternating rounds."""
    engine = create_engine(settings, pool_size=2)
    try:
        async with fresh_schema(engine, "sealing") as tables:
            store = EventStore(tables, sealing=SEALING)
            rounds = max(1, scale.batches // 2)
            timings = {True: 0.0, False: 0.0}
            events = {True: 0, False: 0}
            for n in range(scale.batch_warmup * 2 + rounds * 2):
                sealed = n % 2 == 0
                batch = _batch(scale, sealed)
                t0 = time.perf_counter()
                async with engine.begin() as conn:
                    await store.append_batch(conn, batch)
                if n >= scale.batch_warmup * 2:
                    timings[sealed] += time.perf_counter() - t0
                    events[sealed] += sum(len(a.envelopes) for a in batch)
            ours, plain = (events[k] / timings[k] for k in (True, False))
            info(f"sealing.append.batched: sealed {ours:,.0f} events/s, unsealed {plain:,.0f} events/s "
                 f"({rounds} batches each, alternating; sealed is {ours / plain:.0%} of unsealed)")
    finally:
        await engine.dispose()
    return Figure("sealing.append.batched", ours, "events/s", "event_store.append.batched.unsealed", plain,
                  HIGHER_IS_BETTER)


async def append_batched(settings: Settings, scale: StoreScale) -> Figure:
    engine = create_engine(settings, pool_size=2)
    try:
        async with fresh_schema(engine, "batched") as tables:
            store = EventStore(tables, sealing=SEALING)
            total = scale.batch_warmup + scale.batches
            batches = [_batch(scale) for _ in range(total)]
            events_per_batch = sum(len(a.envelopes) for a in batches[0])
            info(f"append.batched: {scale.batches} batches of {events_per_batch} events over "
                 f"{scale.streams_per_batch} streams (+{scale.batch_warmup} warm-up batches), one transaction each")

            async def append(batch: list[PendingAppend]) -> None:
                async with engine.begin() as conn:
                    await store.append_batch(conn, batch)

            for batch in batches[: scale.batch_warmup]:
                await append(batch)
            t0 = time.perf_counter()
            for batch in batches[scale.batch_warmup :]:
                await append(batch)
            ours = scale.batches * events_per_batch / (time.perf_counter() - t0)
            info(f"append.batched: event store {ours:,.0f} events/s")

            async with engine.begin() as conn:
                await conn.execute(text(_plain_table_sql(tables.schema)))
            sql = _insert_sql(tables.schema)
            row_batches = [
                [(env.id, a.stream_id, env.data.model_dump_json()) for a in batch for env in a.envelopes]
                for batch in batches
            ]
            conn = await asyncpg.connect(asyncpg_dsn(settings))
            try:

                async def insert_many(rows: list[tuple[uuid.UUID, str, str]]) -> None:
                    async with conn.transaction():
                        await conn.executemany(sql, rows)

                for rows in row_batches[: scale.batch_warmup]:
                    await insert_many(rows)
                t0 = time.perf_counter()
                for rows in row_batches[scale.batch_warmup :]:
                    await insert_many(rows)
                raw = scale.batches * events_per_batch / (time.perf_counter() - t0)
            finally:
                await conn.close()
            info(f"append.batched: raw asyncpg executemany {raw:,.0f} rows/s "
                 f"(goal in the issue: event store >= 50% of this; measured {ours / raw:.0%})")
    finally:
        await engine.dispose()
    return Figure("event_store.append.batched", ours, "events/s", "asyncpg.executemany", raw, HIGHER_IS_BETTER)
