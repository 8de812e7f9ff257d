"""Building blocks for the kernel's integration tests: events, an effect table, a live consumer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from faststream.kafka import KafkaBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.datakeys import DataKey, DataKeyDestroyed, DataKeyUnavailable, new_data_key
from shared.events.assessment import ObservationRecorded
from shared.events.envelope import Envelope
from shared.events.sealing import EventSealing
from shared.messaging.clients import faststream_security
from shared.messaging.consumer import IdempotentConsumer, RetryPolicy
from shared.messaging.producer import KafkaPublisher
from shared.messaging.subscription import subscribe
from shared.messaging.topics import ensure_topics
from shared.store.tables import KernelTables

TRUST = uuid.UUID("00000000-0000-4000-8000-000000000001")
ACADEMY = uuid.UUID("00000000-0000-4000-8000-0000000000a1")


class MemoryKeyring:
    """A stand-in for the consent service's keys in the kernel's tests (the services' tests use the
    real one): keys made on first use, destroyable, and a switch that makes it unreachable."""

    def __init__(self) -> None:
        self.keys: dict[uuid.UUID, DataKey | None] = {}
        self.down = False
        self.asked = 0

    async def key_for(self, trust_id: uuid.UUID, pupil_id: uuid.UUID) -> DataKey:
        self.asked += 1
        if self.down:
            raise DataKeyUnavailable("the key service is down (test)")
        if pupil_id not in self.keys:
            self.keys[pupil_id] = new_data_key(trust_id, pupil_id)
        key = self.keys[pupil_id]
        if key is None:
            raise DataKeyDestroyed(pupil_id)
        return key

    def destroy(self, pupil_id: uuid.UUID) -> None:
        self.keys[pupil_id] = None

    def forget(self, pupil_id: uuid.UUID) -> None:
        """Nothing cached."""


KEYS = MemoryKeyring()
SEALING = EventSealing(KEYS)


def observation(pupil_id: uuid.UUID | None = None, statement_id: str = "being.safe.1", **context: Any) -> Envelope:
    data = ObservationRecorded(
        observation_id=uuid.uuid4(),
        pupil_id=pupil_id or uuid.uuid4(),
        framework_version="sample-1",
        statement_id=statement_id,
        level="emerging",
        observer_id="staff-1",
        observed_at=datetime.now(UTC),
    )
    return Envelope(data=data, trust_id=TRUST, academy_id=ACADEMY, source="/flourish/tests", **context)


async def create_effects_table(engine: AsyncEngine, tables: KernelTables) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(f'CREATE TABLE "{tables.schema}".effects (event_id uuid NOT NULL, statement_id text NOT NULL)')
        )


def record_effect(tables: KernelTables, fail_on: str | None = None) -> Callable[[AsyncConnection, Envelope], Any]:
    """A projection that writes one row per event it applies (no unique key: copies would show)."""

    async def handle(conn: AsyncConnection, envelope: Envelope) -> None:
        statement_id = envelope.data.statement_id  # type: ignore[attr-defined]
        await conn.execute(
            text(f'INSERT INTO "{tables.schema}".effects VALUES (:id, :statement)'),
            {"id": envelope.id, "statement": statement_id},
        )
        if statement_id == fail_on:
            raise ValueError("this statement always fails")

    return handle


async def effects(engine: AsyncEngine, tables: KernelTables) -> list[tuple[uuid.UUID, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f'SELECT event_id, statement_id FROM "{tables.schema}".effects'))
        return [tuple(row) for row in rows]  # type: ignore[misc]


def consumer_for(
    name: str, engine: AsyncEngine, tables: KernelTables, publisher: KafkaPublisher, prefix: str,
    fail_on: str | None = None,
) -> IdempotentConsumer:
    return IdempotentConsumer(
        name,
        engine,
        tables,
        {ObservationRecorded: record_effect(tables, fail_on)},
        publisher,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05),
        topic_prefix=prefix,
        sealing=SEALING,
    )


@asynccontextmanager
async def running(bootstrap: Mapping[str, Any], consumer: IdempotentConsumer, topic: str) -> AsyncIterator[KafkaBroker]:
    """A real FastStream broker running the consumer, as a service runs it."""
    await ensure_topics(bootstrap, [topic, consumer.dead_letter_topic], partitions=3)
    broker = KafkaBroker(bootstrap["bootstrap_servers"], security=faststream_security(bootstrap))
    subscribe(broker, consumer, [topic])
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll an async check until it returns something truthy (no fixed sleeps in tests)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last result: {result!r}")
        await asyncio.sleep(interval)


async def read_topic(bootstrap: Mapping[str, Any], topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Every record on a topic from the beginning, waiting until at least `expected` arrived."""
    reader = AIOKafkaConsumer(topic, **bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await reader.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await reader.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await reader.stop()
    return records
