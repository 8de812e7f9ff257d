"""The event pipeline (event store → outbox relay → Kafka → idempotent consumer → projection)
beside raw aiokafka producing and consuming same-size records on the same broker.

Everything runs in this one process and event loop, as a service runs its relay and consumers
(the appending "command side" shares the loop too). Consumer group joins and first connections
happen in a warm-up that is not timed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from faststream.kafka import KafkaBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.common import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    SEALING,
    Figure,
    delete_topics,
    fresh_schema,
    info,
    observation,
    paced,
    percentile,
    stream_of,
    unique,
    unsealed,
    wait_until,
)
from shared.events.assessment import ObservationRecorded
from shared.events.envelope import Envelope, Headers, encode, topic_for
from shared.messaging.clients import ADMIN, faststream_security, kafka_options
from shared.messaging.consumer import IdempotentConsumer
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.messaging.subscription import subscribe
from shared.messaging.topics import DEFAULT_PARTITIONS, ensure_topics
from shared.settings import Settings
from shared.store.db import create_engine
from shared.store.event_store import EventStore, PendingAppend
from shared.store.outbox import OutboxRelay
from shared.store.tables import KernelTables

Message = tuple[bytes, Headers, bytes]  # key, headers, value
BROKER_LOG = logging.getLogger("bench.faststream")
RAW_RUNS = 3


@dataclass(frozen=True)
class PipelineScale:
    events: int = 20_000  # throughput: events pre-appended, then relayed and consumed
    warmup_events: int = 500
    append_batch: int = 500
    partitions: int = DEFAULT_PARTITIONS
    rate_per_s: float = 200.0  # latency: steady single-event appends per second
    duration_s: float = 10.0
    warmup_s: float = 1.0
    drain_timeout_s: float = 120.0


# --- the pipeline's moving parts -------------------------------------------------------------


class CountingPublisher(KafkaPublisher):
    """The kernel's publisher, counting what the relay got acknowledged (for the progress log)."""

    def __init__(self, bootstrap_servers: Mapping[str, Any]) -> None:
        super().__init__(bootstrap_servers, client_id="flourish-bench")
        self.sent = 0
        self.target = math.inf
        self.all_sent_at: float | None = None
        self.acked: dict[bytes, float] | None = None  # ce_id -> when the relay's send_all returned

    async def send_all(self, records: Sequence[OutgoingRecord]) -> None:
        await super().send_all(records)
        if self.acked is not None:
            now = time.perf_counter()
            for record in records:
                self.acked[dict(record.headers)["ce_id"]] = now
        self.sent += len(records)
        if self.all_sent_at is None and self.sent >= self.target:
            self.all_sent_at = time.perf_counter()


class CountingConsumer(IdempotentConsumer):
    """The kernel's idempotent consumer; `process` returns after the batch's transaction (effects
    and inbox rows) committed, so counting there says exactly when the inbox holds an event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.processed = 0
        self.batches = 0
        self._target = math.inf
        self._reached = asyncio.Event()

    async def process(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await super().process(records)
        self.processed += len(records)
        self.batches += 1
        if self.processed >= self._target:
            self._reached.set()

    async def wait_for(self, total: int, timeout: float) -> None:
        self._target = total
        if self.processed < total:
            self._reached.clear()
            await asyncio.wait_for(self._reached.wait(), timeout)


def projection(tables: KernelTables, applied: dict[uuid.UUID, float] | None = None) -> Any:
    """A trivial read model: one row per observation, a whole run of them in one statement
    (a kernel batch handler), in the consumer's transaction."""
    sql = text(
        f'INSERT INTO "{tables.schema}".observations (event_id, pupil_id, statement_id, level) '
        "SELECT * FROM unnest(CAST(:event_ids AS uuid[]), CAST(:pupil_ids AS uuid[]), "
        "CAST(:statement_ids AS text[]), CAST(:levels AS text[]))"
    )

    async def handle(conn: AsyncConnection, run: Sequence[Envelope]) -> None:
        observations: list[ObservationRecorded] = [envelope.data for envelope in run]  # type: ignore[misc]
        await conn.execute(
            sql,
            {
                "event_ids": [envelope.id for envelope in run],
                "pupil_ids": [o.pupil_id for o in observations],
                "statement_ids": [o.statement_id for o in observations],
                "levels": [o.level.value for o in observations],
            },
        )
        if applied is not None:
            now = time.perf_counter()
            for envelope in run:
                applied[envelope.id] = now

    return handle


async def create_projection_table(engine: AsyncEngine, tables: KernelTables) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f'CREATE TABLE "{tables.schema}".observations '
                "(event_id uuid NOT NULL, pupil_id uuid NOT NULL, statement_id text NOT NULL, level text NOT NULL)"
            )
        )


@asynccontextmanager
async def relay_running(relay: OutboxRelay) -> AsyncIterator[None]:
    """The relay as a service runs it: ``run(stop)``, woken by NOTIFY, polling as a fallback."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop), name="bench-outbox-relay")
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


@dataclass
class Pipeline:
    engine: AsyncEngine
    tables: KernelTables
    store: EventStore
    publisher: CountingPublisher
    consumer: CountingConsumer
    relay: OutboxRelay
    topic: str


@asynccontextmanager
async def pipeline(
    settings: Settings, label: str, prefix: str, partitions: int, applied: dict[uuid.UUID, float] | None = None
) -> AsyncIterator[Pipeline]:
    """A fresh schema with the kernel's tables and a projection table; the kernel's publisher,
    relay and idempotent consumer, the consumer on a real FastStream broker via subscribe()."""
    bootstrap = kafka_options(settings, ADMIN)
    topic = topic_for("assessment", prefix)
    engine = create_engine(settings)  # the kernel's engine, as a service creates it (pool of 10)
    try:
        async with fresh_schema(engine, label) as tables:
            await create_projection_table(engine, tables)
            publisher = CountingPublisher(bootstrap)
            consumer = CountingConsumer(
                unique(f"bench-{label}-"), engine, tables, {}, publisher, topic_prefix=prefix,
                batch_handlers={ObservationRecorded: projection(tables, applied),
                                unsealed(): projection(tables, applied)},
                sealing=SEALING,
            )
            relay = OutboxRelay(
                engine, tables, publisher, batch_size=settings.relay_batch_size,
                poll_interval_s=settings.relay_poll_interval_s, topic_prefix=prefix,
            )
            topics = [topic, consumer.dead_letter_topic]
            await ensure_topics(bootstrap, topics, partitions=partitions)
            # FastStream's default access logger writes two INFO lines per batch to *stdout*, which
            # is reserved for the figures: give the broker a logger that only passes warnings.
            broker = KafkaBroker(bootstrap["bootstrap_servers"], client_id="flourish-bench", logger=BROKER_LOG,
                                 security=faststream_security(bootstrap))
            subscribe(broker, consumer, [topic])
            await publisher.start()
            await broker.start()
            try:
                yield Pipeline(engine, tables, EventStore(tables, sealing=SEALING), publisher, consumer, relay, topic)
            finally:
                await broker.stop()
                await publisher.stop()
                await delete_topics(bootstrap, topics)
    finally:
        await engine.dispose()


async def inbox_count(p: Pipeline) -> int:
    async with p.engine.connect() as conn:
        return int(await conn.scalar(
            text(f'SELECT count(*) FROM "{p.tables.schema}".inbox WHERE consumer = :c'), {"c": p.consumer.name}
        ))


async def append_in_batches(p: Pipeline, envelopes: Sequence[Envelope], batch: int) -> None:
    for start in range(0, len(envelopes), batch):
        chunk = envelopes[start : start + batch]
        async with p.engine.begin() as conn:
            await p.store.append_batch(conn, [PendingAppend(stream_of(e.data.pupil_id), [e]) for e in chunk])  # type: ignore[attr-defined]


def make_envelopes(count: int, pupils: int = 500, sealed: bool = True) -> list[Envelope]:
    ids = [uuid.uuid4() for _ in range(pupils)]
    return [observation(ids[i % pupils], sealed=sealed) for i in range(count)]


# --- raw aiokafka: the baselines -------------------------------------------------------------


def raw_producer(bootstrap: Mapping[str, Any]) -> AIOKafkaProducer:
    """The same producer settings as the kernel's KafkaPublisher (acks=all, idempotent, linger 2 ms)."""
    return AIOKafkaProducer(
        **bootstrap, client_id="bench-raw", enable_idempotence=True, acks="all",
        linger_ms=2, max_batch_size=256 * 1024, request_timeout_ms=15_000,
    )


def raw_consumer(bootstrap: Mapping[str, Any], topic: str) -> AIOKafkaConsumer:
    # A consumer group, as the pipeline's consumer has; polled with FastStream's batch defaults.
    return AIOKafkaConsumer(
        topic, **bootstrap, client_id="bench-raw", group_id=unique("bench-raw-"),
        auto_offset_reset="earliest",
    )


@asynccontextmanager
async def raw_clients(
    bootstrap: Mapping[str, Any], prefix: str, partitions: int
) -> AsyncIterator[tuple[str, AIOKafkaProducer, AIOKafkaConsumer]]:
    topic = f"{prefix}raw"
    await ensure_topics(bootstrap, [topic], partitions=partitions)
    producer = raw_producer(bootstrap)
    consumer = raw_consumer(bootstrap, topic)
    await producer.start()
    await consumer.start()
    try:
        yield topic, producer, consumer
    finally:
        await consumer.stop()
        await producer.stop()
        await delete_topics(bootstrap, [topic])


def wire_messages(envelopes: Sequence[Envelope]) -> list[Message]:
    """Key, CloudEvents headers and JSON value exactly as the relay would send these events."""
    return [encode(e, stream_of(e.data.pupil_id)) for e in envelopes]  # type: ignore[attr-defined]


async def produce(producer: AIOKafkaProducer, topic: str, messages: Sequence[Message]) -> None:
    futures = [await producer.send(topic, value=value, key=key, headers=headers) for key, headers, value in messages]
    await asyncio.gather(*futures)


# --- figure 3: throughput --------------------------------------------------------------------


async def _relayed_and_consumed(settings: Settings, scale: PipelineScale, sealed: bool) -> float:
    """Events/s from starting the relay until the consumer has applied them all (pre-appended)."""
    prefix = unique("bench.") + "."
    warm = make_envelopes(scale.warmup_events, sealed=sealed)
    timed = make_envelopes(scale.events, sealed=sealed)
    async with pipeline(settings, "sealing" if sealed else "unsealed", prefix, scale.partitions) as p:
        await append_in_batches(p, warm, scale.append_batch)
        async with relay_running(p.relay):
            await p.consumer.wait_for(len(warm), scale.drain_timeout_s)
        await append_in_batches(p, timed, scale.append_batch)
        total = len(warm) + len(timed)
        p.publisher.target = total
        t0 = time.perf_counter()
        async with relay_running(p.relay):
            await p.consumer.wait_for(total, scale.drain_timeout_s)
            elapsed = time.perf_counter() - t0
        if (in_inbox := await inbox_count(p)) != total:
            raise RuntimeError(f"the inbox holds {in_inbox} events, expected {total}")
    return len(timed) / elapsed


async def throughput_sealing(settings: Settings, scale: PipelineScale) -> list[Figure]:
    """`sealing.pipeline.throughput`: relay + consumer with the ratings sealed (the consumer opens
    each before its handler), beside the same run with nothing sealed; median of three pairs."""
    pairs = []
    for _ in range(3):
        sealed = await _relayed_and_consumed(settings, scale, sealed=True)
        plain = await _relayed_and_consumed(settings, scale, sealed=False)
        pairs.append((sealed, plain))
        info(f"sealing.pipeline.throughput: sealed {sealed:,.0f} events/s, unsealed {plain:,.0f} events/s")
    ours = statistics.median(s for s, _ in pairs)
    plain = statistics.median(p for _, p in pairs)
    info(f"sealing.pipeline.throughput: medians sealed {ours:,.0f}, unsealed {plain:,.0f} ({ours / plain:.0%}; "
         "the issue's bound: sealing must not halve the pipeline)")
    return [Figure("sealing.pipeline.throughput", ours, "events/s", "pipeline.throughput.unsealed", plain,
                   HIGHER_IS_BETTER)]


async def throughput(settings: Settings, scale: PipelineScale) -> list[Figure]:
    bootstrap = kafka_options(settings, ADMIN)
    prefix = unique("bench.") + "."
    warm = make_envelopes(scale.warmup_events)
    timed = make_envelopes(scale.events)
    async with pipeline(settings, "throughput", prefix, scale.partitions) as p:
        info(f"pipeline.throughput: warm-up ({len(warm)} events; consumer group join, connections)")
        await append_in_batches(p, warm, scale.append_batch)
        async with relay_running(p.relay):
            await p.consumer.wait_for(len(warm), scale.drain_timeout_s)

        t0 = time.perf_counter()
        await append_in_batches(p, timed, scale.append_batch)
        info(f"pipeline.throughput: pre-appended {len(timed)} events in batches of {scale.append_batch} "
             f"({len(timed) / (time.perf_counter() - t0):,.0f} events/s, not part of the figure)")

        total = len(warm) + len(timed)
        p.publisher.target = total
        batches_before = p.consumer.batches
        t0 = time.perf_counter()
        async with relay_running(p.relay):
            await p.consumer.wait_for(total, scale.drain_timeout_s)
            elapsed = time.perf_counter() - t0
        in_inbox = await inbox_count(p)
        if in_inbox != total:
            raise RuntimeError(f"the inbox holds {in_inbox} events, expected {total}")
        ours = len(timed) / elapsed
        relayed = (p.publisher.all_sent_at or math.nan) - t0
        batches = p.consumer.batches - batches_before
        info(f"pipeline.throughput: relay + consumer {ours:,.0f} events/s ({len(timed)} in {elapsed:.2f}s; "
             f"the relay had every event acknowledged after {relayed:.2f}s = {len(timed) / relayed:,.0f} events/s; "
             f"consumer applied {batches} batches, {len(timed) / max(batches, 1):.0f} events each)")

    async with raw_clients(bootstrap, prefix, scale.partitions) as (topic, producer, consumer):
        received = 0

        async def consume_until(count: int) -> None:
            nonlocal received
            while received < count:
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                received += sum(len(records) for records in batch.values())

        info(f"aiokafka.produce_consume: warm-up ({len(warm)} records)")
        await asyncio.wait_for(asyncio.gather(produce(producer, topic, wire_messages(warm)), consume_until(len(warm))),
                               scale.drain_timeout_s)
        size = statistics.mean(len(v) for _, _, v in wire_messages(timed[:1000]))
        header_bytes = statistics.mean(sum(len(n) + len(v) for n, v in h) for _, h, _ in wire_messages(timed[:1000]))
        # A raw run takes about a second, so one stall of the broker would decide it: take the
        # median of RAW_RUNS runs, each of the same M records (fresh events, same sizes).
        rates = []
        for _ in range(RAW_RUNS):
            messages = wire_messages(make_envelopes(len(timed)))
            target = received + len(messages)
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(produce(producer, topic, messages), consume_until(target)),
                                   scale.drain_timeout_s)
            rates.append(len(messages) / (time.perf_counter() - t0))
        raw = statistics.median(rates)
        info(f"aiokafka.produce_consume: median {raw:,.0f} records/s of runs {', '.join(f'{r:,.0f}' for r in rates)} "
             f"({len(timed)} records each, value {size:.0f} B, headers {header_bytes:.0f} B; "
             f"goal in the issue: pipeline >= 30% of this; measured {ours / raw:.0%})")
    return [Figure("pipeline.throughput", ours, "events/s", "aiokafka.produce_consume", raw, HIGHER_IS_BETTER)]


# --- figure 4: latency -----------------------------------------------------------------------


def _describe(label: str, latencies_ms: Sequence[float], achieved_rate: float) -> None:
    info(f"{label}: {len(latencies_ms)} events at {achieved_rate:.0f}/s; latency ms "
         f"p50 {percentile(latencies_ms, 50):.1f}, p90 {percentile(latencies_ms, 90):.1f}, "
         f"p99 {percentile(latencies_ms, 99):.1f}, max {max(latencies_ms):.1f}, mean {statistics.mean(latencies_ms):.1f}")


async def latency(settings: Settings, scale: PipelineScale) -> list[Figure]:
    bootstrap = kafka_options(settings, ADMIN)
    prefix = unique("bench.") + "."
    rate = scale.rate_per_s
    warm = make_envelopes(int(rate * scale.warmup_s))
    timed = make_envelopes(int(rate * scale.duration_s))

    committed: dict[uuid.UUID, float] = {}
    applied: dict[uuid.UUID, float] = {}
    async with pipeline(settings, "latency", prefix, scale.partitions, applied) as p:

        def appender(envelopes: Sequence[Envelope]) -> Any:
            async def append(i: int) -> None:
                envelope = envelopes[i]
                async with p.engine.begin() as conn:
                    await p.store.append(conn, stream_of(envelope.data.pupil_id), [envelope])  # type: ignore[attr-defined]
                committed[envelope.id] = time.perf_counter()  # the commit has returned

            return append

        p.publisher.acked = acked = {}
        info(f"pipeline.latency: single-event appends at {rate:.0f}/s: {scale.warmup_s:.0f}s warm-up, "
             f"then {scale.duration_s:.0f}s measured; relay run() on LISTEN/NOTIFY")
        async with relay_running(p.relay):
            await paced(len(warm), rate, appender(warm))
            await p.consumer.wait_for(len(warm), scale.drain_timeout_s)
            achieved = await paced(len(timed), rate, appender(timed))
            await p.consumer.wait_for(len(warm) + len(timed), scale.drain_timeout_s)
        ours = [(applied[e.id] - committed[e.id]) * 1000 for e in timed]
        _describe("pipeline.latency", ours, achieved)
        # Where the time goes: commit -> the relay has Kafka's acknowledgement -> the handler ran.
        relayed = [(acked[str(e.id).encode()] - committed[e.id]) * 1000 for e in timed]
        consumed = [(applied[e.id] - acked[str(e.id).encode()]) * 1000 for e in timed]
        info(f"pipeline.latency stages: commit -> relay acked p50 {percentile(relayed, 50):.1f} / "
             f"p99 {percentile(relayed, 99):.1f} ms; relay acked -> handler applied p50 "
             f"{percentile(consumed, 50):.1f} / p99 {percentile(consumed, 99):.1f} ms")

    sent: dict[bytes, float] = {}
    received: dict[bytes, float] = {}
    async with raw_clients(bootstrap, prefix, scale.partitions) as (topic, producer, consumer):
        stop = asyncio.Event()

        async def consume() -> None:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        received[record.headers[1][1]] = now  # ce_id

        futures: list[asyncio.Future[Any]] = []

        def sender(messages: Sequence[Message]) -> Any:
            async def send(i: int) -> None:
                key, headers, value = messages[i]
                sent[headers[1][1]] = time.perf_counter()
                futures.append(await producer.send(topic, value=value, key=key, headers=headers))

            return send

        reader = asyncio.create_task(consume())
        try:
            warm_messages, messages = wire_messages(warm), wire_messages(timed)
            await paced(len(warm_messages), rate, sender(warm_messages))
            await wait_until(lambda: _have(received, len(warm_messages)), scale.drain_timeout_s, "raw warm-up")
            achieved = await paced(len(messages), rate, sender(messages))
            await asyncio.gather(*futures)
            await wait_until(lambda: _have(received, len(warm_messages) + len(messages)), scale.drain_timeout_s,
                             "raw consumption")
        finally:
            stop.set()
            await reader
        raw = [(received[h[1][1]] - sent[h[1][1]]) * 1000 for _, h, _ in messages]
        _describe("aiokafka.produce_consume latency", raw, achieved)

    return [
        Figure(f"pipeline.latency.p{p}", percentile(ours, p), "ms", f"aiokafka.produce_consume.latency.p{p}",
               percentile(raw, p), LOWER_IS_BETTER)
        for p in (50, 99)
    ]


async def _have(received: dict[bytes, float], count: int) -> bool:
    return len(received) >= count
