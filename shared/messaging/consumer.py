"""Idempotent consumers: each event's effect happens once, a bad message never stops a partition.

A batch of records is applied in one transaction that also writes each event id to the
consumer's inbox; an event already in the inbox is skipped, so a redelivered event has its
effect once. When the batch fails, its events are applied one by one, each retried with
backoff; one that still fails, and any record that is not a valid event, goes to the consumer's
dead-letter topic and the partition moves on. Three kinds go there at once, never retried: a
record larger than any event (refused before it is parsed), an event from the wrong producer (its
type is not one the topic's one producer publishes: shared.messaging.provenance), and an event
whose tenant contradicts what the service knows (shared.messaging.tenancy). An event a handler
gets names as its source the topic's producer, not what the event claims. A failure of
PostgreSQL or Kafka themselves is not the message's fault: it is never dead-lettered, the batch is
handed back (FastStream seeks the partition back) and comes again once they are back.

Events whose personal fields are sealed (shared.events.sealing) are opened with the service's
keyring before any handler runs. An event whose every subject pupil was erased (their keys
destroyed) is skipped and counted (outcome "erased"); a group event is handled without its erased
members. A key service that cannot be reached (DataKeyUnavailable) is like an outage of
PostgreSQL: the batch is handed back and comes again, never skipped. A sealed part that does not
open with the pupil's live key (tampered with) is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from opentelemetry.trace import Link, SpanKind
from pydantic import ValidationError
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.datakeys import (
    DataKey,
    DataKeyDestroyed,
    DataKeyRefused,
    DataKeyUnavailable,
    PupilKeyring,
    SealedFieldUnreadable,
    UnknownDataKey,
)
from shared.events.consent import PupilErased
from shared.events.envelope import TOPIC_PREFIX, Envelope, InvalidMessage, WireEvent, decode_wire, invalid_data
from shared.events.registry import Event
from shared.events.sealing import EventSealing, is_sealed, open_data
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.messaging.provenance import producer_of, wrong_producer
from shared.messaging.tenancy import TenancyGuard, TenantMismatch
from shared.messaging.topics import consumer_group, dead_letter_topic
from shared.store.db import is_transient
from shared.store.tables import KernelTables
from shared.telemetry import (
    consumer_retries,
    context_from,
    dead_lettered,
    messages_consumed,
    messaging_span,
    security_refusals,
    span_context,
    tracer,
)

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 1_000_000
"""The largest record (key, value and headers) a consumer parses: the event store's largest event
(900 000 bytes of data) with room for its headers, so no event a service published is refused,
and under the broker's 1 MiB, so its dead letter fits. Settings.consumer_max_record_bytes."""
MAX_REASON_CHARS = 500

Handler = Callable[[AsyncConnection, Envelope[Any]], Awaitable[None]]
BatchHandler = Callable[[AsyncConnection, Sequence[Envelope[Any]]], Awaitable[None]]
"""Applies consecutive events of one type in one go (one statement for a whole batch, say)."""


class ConsumerPaused(Exception):
    """PostgreSQL or Kafka is unavailable: the batch must come again, nothing was skipped."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        # Exponential backoff with full jitter, so replicas that failed together retry apart.
        return random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))  # noqa: S311 - not a secret


class IdempotentConsumer:
    def __init__(
        self,
        name: str,
        engine: AsyncEngine,
        tables: KernelTables,
        handlers: Mapping[type[Event], Handler],
        publisher: KafkaPublisher,
        retry: RetryPolicy | None = None,
        topic_prefix: str = TOPIC_PREFIX,
        batch_handlers: Mapping[type[Event], BatchHandler] | None = None,
        roster: Table | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
        sealing: EventSealing | None = None,
    ) -> None:
        self.name = name
        # Opens sealed events before handlers run (the service's keyring).
        self.sealing = sealing
        # Where the service keeps each pupil's trust and academy: events that contradict it are refused.
        self.roster = roster
        self.tenancy = TenancyGuard(roster) if roster is not None else None
        self.max_record_bytes = max_record_bytes
        self.engine = engine
        self.handlers = dict(handlers)
        self.batch_handlers = dict(batch_handlers or {})
        self.publisher = publisher
        self.retry = retry or RetryPolicy()
        self.topic_prefix = topic_prefix
        self.dead_letter_topic = dead_letter_topic(name, topic_prefix)
        self.group_id = consumer_group(name, topic_prefix)
        self._consecutive_pauses = 0
        inbox = f'"{tables.schema}".inbox'
        self._claim_sql = text(
            f"""
            INSERT INTO {inbox} (consumer, event_id)
            SELECT :consumer, id FROM unnest(CAST(:ids AS uuid[])) AS id
            ON CONFLICT DO NOTHING
            RETURNING event_id
            """
        )

    async def process(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Handle a batch from one poll. Returns once every record is applied, skipped or
        dead-lettered; raises ConsumerPaused if the batch must be delivered again."""
        try:
            wired, rejected = self._decode(records)
            applicable = await self._open(wired, rejected)
            if applicable:
                await self._apply(applicable)
            for record, reason, cause in rejected:
                await self._dead_letter(record, reason, attempts=0, cause=cause)
        except Exception as error:
            if not (isinstance(error, ConsumerPaused) or _must_wait(error)):
                raise
            self._consecutive_pauses += 1
            log.warning("consumer paused", extra={"consumer": self.name, "error_type": type(error).__name__})
            # Back off before the batch is redelivered, rather than spin against a dead server.
            await asyncio.sleep(self.retry.delay(min(self._consecutive_pauses, 6)) + 0.1)
            raise ConsumerPaused(type(error).__name__) from error
        self._consecutive_pauses = 0

    def _decode(
        self, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> tuple[list[tuple[ConsumerRecord[Any, Any], WireEvent]], list[tuple[ConsumerRecord[Any, Any], str, str]]]:
        applicable: list[tuple[ConsumerRecord[Any, Any], WireEvent]] = []
        rejected: list[tuple[ConsumerRecord[Any, Any], str, str]] = []
        for record in records:
            size = _size_of(record)
            if size > self.max_record_bytes:
                # Refused before parsing: an absurd payload costs no JSON parse and no validation.
                rejected.append((record, f"record is {size} bytes, over the limit of {self.max_record_bytes}", "oversized"))
                continue
            try:
                wire = decode_wire(record.headers, record.value)
            except InvalidMessage as error:
                rejected.append((record, error.reason, "invalid"))
                continue
            if (refusal := wrong_producer(record.topic, wire.type, wire.model.context, wire.source,
                                          self.topic_prefix)) is not None:
                # Before anything acts on it (a key forgotten, a handler): the producer that owns
                # the topic never publishes this, so whoever wrote it could not have been asked to.
                rejected.append((record, refusal, "wrong_producer"))
                continue
            if wire.model is PupilErased and self.sealing is not None:
                # Whatever this consumer handles, a cached key of an erased pupil goes at once.
                self._forget(wire)
            if wire.model in self.handlers or wire.model in self.batch_handlers:
                applicable.append((record, wire))
                continue
            if not is_sealed(wire.data):
                # Not this consumer's, but still a record to refuse when it is not a valid event
                # (a sealed one is checked by the consumers that open it).
                try:
                    wire.model.model_validate(wire.data)
                except ValidationError as error:
                    rejected.append((record, invalid_data(wire.type, error).reason, "invalid"))
                    continue
            messages_consumed.add(1, {"consumer": self.name, "outcome": "ignored"})
        return applicable, rejected

    def _forget(self, wire: WireEvent) -> None:
        assert self.sealing is not None
        with contextlib.suppress(KeyError, ValueError, TypeError):
            self.sealing.keyring.forget(UUID(wire.data["pupil_id"]))

    async def _open_one(self, wire: WireEvent, sealing: EventSealing | None) -> Event | None:
        if not is_sealed(wire.data):
            return await open_data(sealing, wire.model, wire.data, wire.id, wire.trust_id)
        # In the event's trace: a key the consent service releases for it is audited in that trace.
        # An internal span (the consumer span is the handler's, once per event or batch).
        with messaging_span(f"{self.name} open sealed", SpanKind.INTERNAL, wire.traceparent, wire.tracestate,
                            **{"messaging.consumer.group.name": self.name, "cloudevents.event_id": str(wire.id)}):
            return await open_data(sealing, wire.model, wire.data, wire.id, wire.trust_id)

    async def _open(
        self, wired: list[tuple[ConsumerRecord[Any, Any], WireEvent]], rejected: list[tuple[ConsumerRecord[Any, Any], str, str]]
    ) -> list[tuple[ConsumerRecord[Any, Any], Envelope[Event]]]:
        """The events as models, sealed fields opened. DataKeyUnavailable propagates: the whole
        batch waits (process() hands it back), nothing is skipped for want of a key."""
        opened: list[tuple[ConsumerRecord[Any, Any], Envelope[Event]]] = []
        # One key lookup per pupil per batch (a class's ratings name each pupil many times).
        sealing = EventSealing(_BatchKeys(self.sealing.keyring)) if self.sealing is not None else None
        for record, wire in wired:
            try:
                event = await self._open_one(wire, sealing)
            except ValidationError as error:
                rejected.append((record, invalid_data(wire.type, error).reason, "invalid"))
                continue
            except SealedFieldUnreadable as error:
                rejected.append((record, f"{wire.type}: {error}", "invalid"))
                continue
            except (DataKeyRefused, UnknownDataKey):
                # The key service refused this pupil's key to this trust: the event claims a
                # tenant the pupil is not in. No retry can make it right.
                rejected.append((record, f"{wire.type}: the pupil's data key is not the event's trust's",
                                 "tenant_mismatch"))
                continue
            if event is None:
                # Every pupil the event is about was erased: nothing of it may be applied.
                messages_consumed.add(1, {"consumer": self.name, "outcome": "erased", "event_type": wire.type})
                log.info("event about erased pupils skipped",
                         extra={"consumer": self.name, "event_id": str(wire.id), "event_type": wire.type})
                continue
            # The source is the topic's one producer (checked in _decode), whatever the event says.
            producer = producer_of(record.topic, self.topic_prefix) or wire.source
            opened.append((record, replace(wire.envelope(event), source=producer)))
        return opened

    async def _apply(self, batch: list[tuple[ConsumerRecord[Any, Any], Envelope[Event]]]) -> None:
        try:
            await self._apply_in_one_transaction([envelope for _, envelope in batch])
            return
        except Exception as error:
            if _must_wait(error):
                raise
        # Something in the batch failed: find it by applying the events one at a time.
        for record, envelope in batch:
            await self._apply_with_retries(record, envelope)

    async def _apply_in_one_transaction(self, envelopes: list[Envelope[Event]]) -> None:
        async with self.engine.begin() as conn:
            fresh = await self._claim(conn, [envelope.id for envelope in envelopes])
            to_apply = []
            for envelope in envelopes:
                if envelope.id in fresh:
                    fresh.discard(envelope.id)  # the same event twice in one batch counts once
                    to_apply.append(envelope)
            if duplicates := len(envelopes) - len(to_apply):
                messages_consumed.add(duplicates, {"consumer": self.name, "outcome": "duplicate"})
            if self.tenancy is not None and to_apply:
                await self.tenancy.refuse_other_tenants(conn, to_apply)
            for run in _runs_of_one_type(to_apply):
                batch_handler = self.batch_handlers.get(type(run[0].data))
                if batch_handler is not None:
                    await self._handle_batch(conn, batch_handler, run)
                else:
                    for envelope in run:
                        await self._handle(conn, envelope)
                messages_consumed.add(len(run), {"consumer": self.name, "outcome": "applied", "event_type": run[0].type})

    async def _apply_with_retries(self, record: ConsumerRecord[Any, Any], envelope: Envelope[Event]) -> None:
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                await self._apply_in_one_transaction([envelope])
                return
            except TenantMismatch as error:
                # No retry can make it right: the event claims a tenant it does not belong to.
                await self._dead_letter(record, f"tenant mismatch: {error.reason}", attempts=attempt,
                                        cause="tenant_mismatch")
                return
            except Exception as error:
                if _must_wait(error):
                    raise
                failure = type(error).__name__
                log.warning(
                    "event failed",
                    extra={"consumer": self.name, "event_id": str(envelope.id), "event_type": envelope.type,
                           "error_type": failure, "attempt": attempt},
                )
            if attempt < self.retry.max_attempts:
                consumer_retries.add(1, {"consumer": self.name})
                await asyncio.sleep(self.retry.delay(attempt))
        await self._dead_letter(record, f"handler failed: {failure}", attempts=self.retry.max_attempts,
                                cause="handler_failed")

    async def _handle(self, conn: AsyncConnection, envelope: Envelope[Event]) -> None:
        handler = self.handlers[type(envelope.data)]
        with messaging_span(
            f"{self.name} process",
            SpanKind.CONSUMER,
            envelope.traceparent,
            envelope.tracestate,
            **{"messaging.system": "kafka", "messaging.consumer.group.name": self.name,
               "cloudevents.event_id": str(envelope.id), "cloudevents.event_type": envelope.type},
        ):
            await handler(conn, envelope)

    async def _handle_batch(self, conn: AsyncConnection, handler: BatchHandler, run: list[Envelope[Event]]) -> None:
        # One span for the batch, linked to the trace of every event in it. When every event was
        # written in one trace (one command's events: the usual case unless under load), the span
        # continues that trace, so a request is followed into this consumer; a mixed batch starts
        # a trace of its own and the links say where each event came from.
        links = [Link(span_context(e.traceparent, e.tracestate)) for e in run if e.traceparent]
        traces = {link.context.trace_id for link in links}
        parent = context_from(run[0].traceparent, run[0].tracestate) if len(links) == len(run) and len(traces) == 1 else None
        with tracer.start_as_current_span(
            f"{self.name} process", context=parent, kind=SpanKind.CONSUMER, links=links,
            attributes={"messaging.system": "kafka", "messaging.consumer.group.name": self.name,
                        "messaging.batch.message_count": len(run), "cloudevents.event_type": run[0].type},
        ):
            await handler(conn, run)

    async def _claim(self, conn: AsyncConnection, event_ids: list[UUID]) -> set[UUID]:
        result = await conn.execute(self._claim_sql, {"consumer": self.name, "ids": event_ids})
        return {row[0] for row in result}

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], reason: str, attempts: int, cause: str) -> None:
        """`cause` is one of invalid, oversized, wrong_producer, tenant_mismatch, handler_failed: the
        metric's label (a tenant mismatch or a wrong producer is a producer's bug or an attack,
        worth an alert of its own; a wrong producer also counts as a security refusal)."""
        # The original bytes and headers, untouched, so the message can be replayed as it was
        # (but for a record too large to be an event: see below).
        # The reason names a header, a field or an exception type: never a value.
        key, payload = record.key or b"", record.value or b""
        headers = [(name, value or b"") for name, value in (record.headers or ())]
        if (size := _size_of(record)) > self.max_record_bytes:
            # Too large to be an event, and maybe to fit a producer request beside the reason:
            # the dead letter says where the original is (topic, partition, offset) instead.
            key, payload, headers = b"", b"", [("flourish_dlq_omitted_bytes", str(size).encode())]
        # A reason may quote a header (an unknown type): bounded, so the dead letter always fits.
        reason = reason[:MAX_REASON_CHARS]
        headers += [
            ("flourish_dlq_reason", reason.encode()),
            ("flourish_dlq_consumer", self.name.encode()),
            ("flourish_dlq_source_topic", record.topic.encode()),
            ("flourish_dlq_source_partition", str(record.partition).encode()),
            ("flourish_dlq_source_offset", str(record.offset).encode()),
            ("flourish_dlq_attempts", str(attempts).encode()),
        ]
        await self.publisher.send(
            OutgoingRecord(topic=self.dead_letter_topic, key=key, value=payload, headers=headers)
        )
        dead_lettered.add(1, {"consumer": self.name, "cause": cause})
        if cause == "wrong_producer":
            security_refusals.labels(kind="event_from_wrong_producer").inc()
        messages_consumed.add(1, {"consumer": self.name, "outcome": "dead_lettered"})
        log.warning(
            "message dead-lettered",
            extra={"consumer": self.name, "topic": record.topic, "partition": record.partition,
                   "offset": record.offset, "reason": reason, "cause": cause},
        )


class _BatchKeys:
    """A keyring's answers remembered for one batch: each pupil's key (or erasure) asked once."""

    def __init__(self, keyring: PupilKeyring) -> None:
        self.keyring = keyring
        self.answers: dict[tuple[UUID, UUID], DataKey | DataKeyDestroyed] = {}

    async def key_for(self, trust_id: UUID, pupil_id: UUID) -> DataKey:
        answer = self.answers.get((trust_id, pupil_id))
        if answer is None:
            try:
                answer = await self.keyring.key_for(trust_id, pupil_id)
            except DataKeyDestroyed as erased:
                answer = erased
            self.answers[(trust_id, pupil_id)] = answer
        if isinstance(answer, DataKeyDestroyed):
            raise answer
        return answer

    def forget(self, pupil_id: UUID) -> None:
        self.keyring.forget(pupil_id)


def _must_wait(error: BaseException) -> bool:
    """PostgreSQL or Kafka is away: not the message's fault, so wait rather than dead-letter."""
    return is_transient(error) or isinstance(error, KafkaError | DataKeyUnavailable)


def _size_of(record: ConsumerRecord[Any, Any]) -> int:
    """The record's bytes as they count against the limit: key, value and headers."""
    headers = sum(len(name) + len(value or b"") for name, value in record.headers or ())
    return len(record.key or b"") + len(record.value or b"") + headers


def _runs_of_one_type(envelopes: list[Envelope[Event]]) -> list[list[Envelope[Event]]]:
    """Consecutive events of one type, in order: a batch handler never sees events reordered."""
    runs: list[list[Envelope[Event]]] = []
    for envelope in envelopes:
        if runs and type(runs[-1][0].data) is type(envelope.data):
            runs[-1].append(envelope)
        else:
            runs.append([envelope])
    return runs
