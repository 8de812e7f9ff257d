"""The outbox relay: publishes committed events to Kafka, in order, surviving a crash anywhere.

It reads the oldest outbox rows, sends them with the idempotent producer, waits for every
acknowledgement, and only then deletes the rows. A crash before the delete sends the same events
again on restart (consumers' inboxes drop the copies); a crash before the acknowledgement leaves
the rows in place. Nothing committed is lost. One relay per schema publishes at a time (a
PostgreSQL advisory lock elects it), so a stream's events reach Kafka in their version order even
when the service runs many replicas.

Appends take no schema-wide lock (shared/store/event_store.py), so an event that commits late may
hold a position below one already published; the relay still skips nothing, because it deletes
what it sent and reads whatever is left. Within a stream, positions follow versions: an append
holds its streams' locks until its transaction ends, so the next append to that stream inserts
(and takes its position) only after the previous one committed; and a batch that holds a later
version also holds, or follows the deletion of, every earlier one, sent first in position order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from opentelemetry.trace import Link, SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.events.envelope import TOPIC_PREFIX, WireAttributes, topic_for
from shared.events.registry import model_for
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.messaging.topics import AUDIT_CONTEXT, audit_fact_topic
from shared.store.tables import KernelTables
from shared.telemetry import (
    outbox_publish_failures,
    outbox_published,
    record_outbox_backlog,
    span_context,
    tracer,
)

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        tables: KernelTables,
        publisher: KafkaPublisher,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.5,
        topic_prefix: str = TOPIC_PREFIX,
        service: str | None = None,
    ) -> None:
        self.topic_prefix = topic_prefix
        # The service whose events these are (its store's schema unless named): its audit facts
        # go to its own audit-fact topic, which only it may write.
        self.service = service or tables.schema
        self.engine = engine
        self.tables = tables
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        schema = tables.schema
        self._leader_key = f"flourish.relay.{schema}"
        self._pending_sql = text(
            f"""
            SELECT o.global_position, e.event_id, e.event_type, e.trust_id, e.academy_id, e.data, e.metadata
            FROM "{schema}".outbox o JOIN "{schema}".events e ON e.global_position = o.global_position
            ORDER BY o.global_position
            LIMIT :limit
            """
        )
        self._delete_sql = text(f'DELETE FROM "{schema}".outbox WHERE global_position = ANY(:positions)')
        self._wake = asyncio.Event()
        self.is_leader = False

    async def publish_pending(self, on: AsyncConnection | None = None) -> int:
        """Publish one batch of the oldest unpublished events; returns how many. `on`: a
        connection to do it on (the leader's own, between waits), else one from the pool."""
        if on is None:
            async with self.engine.connect() as conn:
                return await self._publish_on(conn)
        try:
            return await self._publish_on(on)
        except BaseException:
            await on.rollback()
            raise

    async def _publish_on(self, conn: AsyncConnection) -> int:
        rows = (await conn.execute(self._pending_sql, {"limit": self.batch_size})).all()
        if not rows:
            await conn.commit()
            return 0
        records = [self._record(row) for row in rows]
        # One producer span per batch, linked to the trace of every event in it; each record
        # keeps the traceparent of the command that wrote it, so its consumers continue that
        # trace. (A span per record cost the relay a third of its throughput.)
        links = [
            Link(span_context(row.metadata["traceparent"], row.metadata.get("tracestate")))
            for row in rows
            if row.metadata.get("traceparent")
        ]
        with tracer.start_as_current_span(
            f"{self.tables.schema} outbox publish", kind=SpanKind.PRODUCER, links=links,
            attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(records)},
        ):
            try:
                await self.publisher.send_all(records)
            except Exception:
                outbox_publish_failures.add(1, {"schema": self.tables.schema})
                raise
        await conn.execute(self._delete_sql, {"positions": [row.global_position for row in rows]})
        await conn.commit()
        for record in records:
            outbox_published.add(1, {"topic": record.topic})
        return len(rows)

    async def drain(self) -> int:
        """Publish until the outbox is empty (tools and tests; the service runs ``run``)."""
        total = 0
        while count := await self.publish_pending():
            total += count
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until stopped: be the leader, publish, sleep until NOTIFY or the poll interval."""
        backoff = self.poll_interval_s
        while not stop.is_set():
            try:
                await self._lead_and_publish(stop)
                backoff = self.poll_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - Kafka or PostgreSQL away: logged; the rows wait in the outbox
                log.warning(
                    "outbox relay paused", extra={"error_type": type(error).__name__, "schema": self.tables.schema}
                )
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, 10.0)

    async def _lead_and_publish(self, stop: asyncio.Event) -> None:
        async with self.engine.connect() as leader:
            elected = await leader.scalar(
                text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": self._leader_key}
            )
            await leader.commit()
            if not elected:
                self.is_leader = False
                await _sleep_or_stop(stop, self.poll_interval_s * 4)
                return
            self.is_leader = True
            raw = (await leader.get_raw_connection()).driver_connection
            assert raw is not None  # an open connection always has its asyncpg connection
            await raw.add_listener(self.tables.notify_channel, self._on_notify)
            try:
                # Every wake-up is published on the leader's own connection (it holds the lock,
                # and each publish shows it still does): four round trips, none to the pool. The
                # backlog is counted, and the connection checked while idle, once per poll
                # interval, not after every commit a request makes.
                counted = 0.0
                while not stop.is_set():
                    self._wake.clear()
                    if await self.publish_pending(on=leader) >= self.batch_size:
                        continue
                    now = time.monotonic()
                    if now - counted >= self.poll_interval_s:
                        record_outbox_backlog(self.tables.schema, await self._backlog(leader))
                        counted = now
                    if not await _wait_either(self._wake, stop, self.poll_interval_s):
                        # Nothing woke it: the lock lives as long as this connection, check it
                        # still does. Commit at once: PostgreSQL holds back NOTIFY from a session
                        # inside a transaction.
                        await leader.execute(text("SELECT 1"))
                        await leader.commit()
            finally:
                self.is_leader = False
                await raw.remove_listener(self.tables.notify_channel, self._on_notify)
                await leader.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": self._leader_key})

    async def _backlog(self, conn: Any) -> int:
        rows = await conn.scalar(text(f'SELECT count(*) FROM "{self.tables.schema}".outbox'))
        await conn.commit()
        return int(rows or 0)

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    def _record(self, row: Any) -> OutgoingRecord:
        meta = row.metadata
        attributes = WireAttributes(
            id=str(row.event_id),
            type=row.event_type,
            source=meta["source"],
            time=meta["time"],
            trust_id=str(row.trust_id),
            academy_id=str(row.academy_id),
            correlation_id=meta["correlation_id"],
            causation_id=meta.get("causation_id"),
            subject=meta.get("subject"),
            partition_key=meta["partition_key"],
            traceparent=meta.get("traceparent"),
            tracestate=meta.get("tracestate"),
        )
        context = model_for(row.event_type).context
        topic = (audit_fact_topic(self.service, self.topic_prefix) if context == AUDIT_CONTEXT
                 else topic_for(context, self.topic_prefix))
        return OutgoingRecord(
            topic=topic,
            key=attributes.partition_key.encode(),
            value=orjson.dumps(row.data),
            headers=attributes.headers(),
        )


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _wait_either(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> bool:
    """Wait for a wake-up or the stop, at most `timeout`; True if either came."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)
