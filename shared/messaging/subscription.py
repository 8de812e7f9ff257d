"""Wiring an idempotent consumer to a FastStream Kafka subscriber, with commits made explicit.

FastStream's default policy commits the offset before the handler runs (at most once) and its
ACK policy commits even when the handler raises; both would lose a message. Here the offset is
committed only after the batch was applied or dead-lettered; when the consumer asks for the batch
again (PostgreSQL or Kafka away) FastStream's nack seeks the partitions back to the batch's first
record, so nothing is skipped by a later success.
"""

import dataclasses
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaRouter, Topic
from faststream.kafka.annotations import KafkaMessage

from shared.messaging.consumer import IdempotentConsumer
from shared.telemetry import record_consumer_lag

Registrar = KafkaBroker | KafkaRouter


def subscribe(
    registrar: Registrar,
    consumer: IdempotentConsumer,
    topics: list[str],
    *,
    max_records: int = 500,
) -> Any:
    """Subscribe the consumer (in its group, `consumer.group_id`) to the topics; returns the subscriber."""

    async def handle(body: Any, message: KafkaMessage) -> None:
        await consumer.process(message.raw_message)
        _record_lag(consumer.name, message)

    handle.__name__ = f"consume_{consumer.name.replace('.', '_').replace('-', '_')}"
    subscriber = registrar.subscriber(
        # Provisioned by admin (flourish kafka provision, Strimzi's KafkaTopics): never created here,
        # which the service's identity may not do (the broker would refuse, and FastStream warn).
        *(Topic(topic, declare=False) for topic in topics),
        group_id=consumer.group_id,
        batch=True,
        max_records=max_records,
        # FastStream waits this long for records, and as long again after an empty poll: short,
        # so an event that arrives while a consumer is idle is not held back.
        batch_timeout_ms=50,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        parser=_tolerant_parser,
        decoder=_raw_decoder,
        title=f"{consumer.name}",
        description=f"Idempotent consumer {consumer.name}; dead letters on {consumer.dead_letter_topic}",
    )
    subscriber(handle)
    return subscriber


def _record_lag(name: str, message: Any) -> None:
    last: dict[tuple[str, int], int] = {}
    for record in message.raw_message:
        last[(record.topic, record.partition)] = record.offset
    for (topic, partition), offset in last.items():
        highwater = message.consumer.highwater(TopicPartition(topic, partition))
        if highwater is not None:
            record_consumer_lag(name, topic, partition, highwater - offset - 1)


async def _tolerant_parser(records: tuple[ConsumerRecord[Any, Any], ...], original_parser: Any) -> Any:
    # FastStream's parser decodes every header as UTF-8 and would fail, and be redelivered
    # forever, on a hostile record. Give it safe copies; keep the originals for decode and DLQ.
    safe = tuple(dataclasses.replace(record, headers=_safe_headers(record.headers)) for record in records)
    message = await original_parser(safe)
    message.raw_message = records
    return message


def _safe_headers(headers: Any) -> list[tuple[str, bytes]]:
    safe = []
    for name, value in headers or ():
        try:
            (value or b"").decode()
            safe.append((name, value or b""))
        except UnicodeDecodeError:
            safe.append((name, b""))
    return safe


async def _raw_decoder(message: Any) -> Any:
    # The consumer decodes CloudEvents itself; FastStream's JSON decoding would be wasted work.
    return None
