"""The Kafka producer the outbox relay and the dead-letter path share: idempotent, acks=all."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.events.envelope import Headers


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Headers


class KafkaPublisher:
    """Sends records and returns only once the broker has them on every in-sync replica.

    Idempotence stops a retried send from duplicating a record or reordering a partition; what it
    cannot stop (a crash after the send, before the outbox row is deleted) the consumers' inbox
    absorbs.
    """

    def __init__(self, kafka: Mapping[str, Any], client_id: str = "flourish") -> None:
        """`kafka`: where and as whom (shared.messaging.clients.kafka_options)."""
        self._producer = AIOKafkaProducer(
            **kafka,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
            request_timeout_ms=15_000,
        )
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def send_all(self, records: Sequence[OutgoingRecord]) -> None:
        """Send a batch and wait for every acknowledgement; raises if any record failed."""
        futures = [
            await self._producer.send(r.topic, value=r.value, key=r.key, headers=r.headers)
            for r in records
        ]
        await asyncio.gather(*futures)

    async def send(self, record: OutgoingRecord) -> None:
        await self.send_all([record])
