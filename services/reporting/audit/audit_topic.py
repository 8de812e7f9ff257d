"""The audit topic keeps everything: no time-based deletion (retention.ms = -1).

In production the topic's KafkaTopic resource says so (Strimzi reconciles it); on the local stack
and in tests the kernel creates topics with the broker's defaults (seven days), so the reporting
service sets the audit topic's retention itself when it starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from services.reporting.audit.domain.chain import Checkpoint
from services.reporting.audit.witness import WitnessConflict, WitnessUnavailable
from shared.events.envelope import topic_for
from shared.events.registry import UnknownEventType, model_for

if TYPE_CHECKING:
    from shared.service import Runtime

log = logging.getLogger(__name__)

KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


class TopicConfigRefused(Exception):
    pass


async def keep_topic_forever(bootstrap_servers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=KEEP_FOREVER)])
    finally:
        await admin.close()
    for response in responses:
        for error_code, error_message, *_ in response.resources:
            if error_code:
                raise TopicConfigRefused(f"{topic}: error {error_code} {error_message or ''}".strip())


async def topic_retention(bootstrap_servers: str, topic: str) -> dict[str, str]:
    """The topic's effective retention settings (for tests and operators)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return {
        name: value
        for response in responses
        for resource in response.resources
        for name, value, *_ in resource[4]
        if name in KEEP_FOREVER
    }


async def keep_audit_topic(runtime: Runtime, reporting: Any, stop: asyncio.Event) -> None:
    """Background task: set the audit topic's retention once, retrying while Kafka is away (unless
    FLOURISH_AUDIT_KEEP_AUDIT_TOPIC_FOREVER is off: the reporting service's `.audit.settings`)."""
    if not reporting.audit.settings.keep_audit_topic_forever:
        await stop.wait()  # a background task runs until the service stops (one that ends fails liveness)
        return
    topics = [topic_for("audit", runtime.settings.topic_prefix), topic_for(CHECKPOINTS_CONTEXT, runtime.settings.topic_prefix)]
    delay = 0.5
    while not stop.is_set():
        try:
            for topic in topics:
                await keep_topic_forever(runtime.settings.kafka_bootstrap_servers, topic)
            await stop.wait()  # done once; a background task that ended would fail liveness
            return
        except Exception as error:  # noqa: BLE001 - Kafka away or refusing: logged, and tried again until stopped
            log.warning("could not set the audit topics' retention yet",
                        extra={"topics": topics, "error_type": type(error).__name__})
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            delay = min(delay * 2, 30.0)


# --- Kafka as a witness, and as the record of what the ledger should hold --------------------

CHECKPOINTS_CONTEXT = "audit.checkpoints"


async def read_topics(bootstrap_servers: str, topics: Sequence[str]) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Every record on these topics, from the beginning up to their end when called (topics that
    do not exist yet hold nothing). No consumer group: nothing is committed, nobody is disturbed."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None,
                              auto_offset_reset="earliest")
    await reader.start()
    try:
        await reader._client.force_metadata_update()  # noqa: SLF001  (no public refresh in aiokafka)
        partitions = [TopicPartition(topic, p) for topic in topics for p in sorted(reader.partitions_for_topic(topic) or ())]
        if not partitions:
            return
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            for tp, records in (await reader.getmany(*pending, timeout_ms=1000)).items():
                for record in records:
                    if record.offset < ends[tp]:
                        yield record
            pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}
    finally:
        await reader.stop()


class KafkaTopicWitness:
    """Every signed checkpoint also on a Kafka topic of its own (<prefix>audit.checkpoints), kept
    forever like the audit topic, keyed by ledger and trust. Not the events' topic: the ledger
    records every event there, and would chain its own checkpoints. Kafka cannot refuse a second
    record, so a different checkpoint at the same place is found when the topic is read."""

    def __init__(self, bootstrap_servers: str, topic: str, ledger: str) -> None:
        self.bootstrap_servers, self.topic, self.ledger = bootstrap_servers, topic, ledger
        self.name = f"kafka:{topic}"
        self._producer: AIOKafkaProducer | None = None
        self._read: dict[UUID, dict[int, Checkpoint]] | None = None
        # Per trust and seq, the event each entry recorded and when (read with the checkpoints).
        self.recorded: dict[UUID, dict[int, tuple[UUID, str]]] = {}

    async def append(self, checkpoint: Checkpoint, entries: Sequence[Sequence[Any]] | None = None) -> None:
        """Publish the checkpoint; `entries`: [seq, event_id, recorded_at] of each entry it covers
        since the previous one, so that a restored database can re-record them exactly (recover.py)."""
        document = checkpoint.as_json() | ({"entries": [list(e) for e in entries]} if entries is not None else {})
        try:
            if self._producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all",
                                            enable_idempotence=True, request_timeout_ms=10_000)
                await producer.start()
                self._producer = producer
            await self._producer.send_and_wait(self.topic, json.dumps(document, sort_keys=True).encode(),
                                               key=f"{self.ledger}/{checkpoint.trust_id}".encode())
        except KafkaError as error:
            raise WitnessUnavailable(f"{self.name}: {type(error).__name__}") from None

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def _all(self) -> dict[UUID, dict[int, Checkpoint]]:
        """The whole topic, read once per instance (verify makes one per run)."""
        if self._read is None:
            found: dict[UUID, dict[int, Checkpoint]] = {}
            prefix = f"{self.ledger}/".encode()
            try:
                async for record in read_topics(self.bootstrap_servers, [self.topic]):
                    if not (record.key or b"").startswith(prefix):
                        continue
                    document = json.loads(record.value)
                    checkpoint = Checkpoint.from_json(document)
                    for seq, event_id, recorded_at in document.get("entries", []):
                        self.recorded.setdefault(checkpoint.trust_id, {})[int(seq)] = (UUID(event_id), recorded_at)
                    held = found.setdefault(checkpoint.trust_id, {})
                    if held.get(checkpoint.seq, checkpoint) != checkpoint:
                        raise WitnessConflict(f"{self.name} holds two different checkpoints at entry "
                                              f"{checkpoint.seq} of trust {checkpoint.trust_id}")
                    held[checkpoint.seq] = checkpoint
            except KafkaError as error:
                raise WitnessUnavailable(f"{self.name}: {type(error).__name__}") from None
            except (ValueError, KeyError, TypeError):
                raise WitnessUnavailable(f"{self.name}: a record is not a checkpoint") from None
            self._read = found
        return self._read

    async def checkpoints(self, trust_id: UUID) -> list[Checkpoint]:
        held = (await self._all()).get(trust_id, {})
        return [held[seq] for seq in sorted(held)]

    async def trusts(self) -> list[UUID]:
        return sorted(await self._all())


@dataclass(frozen=True)
class Published:
    """An event the ledger should record, as Kafka has it."""

    event_id: UUID
    event_type: str
    topic: str
    published_at: datetime


async def ledger_events(bootstrap_servers: str, prefix: str) -> dict[UUID, dict[UUID, Published]]:
    """Every event the ledger records, per trust, from the topics it records from (kept forever):
    headers only, no payload is parsed."""
    from services.reporting.audit.consumers import CONTEXTS
    from services.reporting.audit.domain.facts import is_recorded

    recorded: dict[str, bool] = {}
    found: dict[UUID, dict[UUID, Published]] = {}
    async for record in read_topics(bootstrap_servers, [topic_for(context, prefix) for context in CONTEXTS]):
        headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
        event_type = headers.get("ce_type", "")
        if event_type not in recorded:
            try:
                recorded[event_type] = is_recorded(model_for(event_type))
            except UnknownEventType:
                recorded[event_type] = False
        if not recorded[event_type]:
            continue
        try:
            trust_id, event_id = UUID(headers["ce_trustid"]), UUID(headers["ce_id"])
        except (KeyError, ValueError):
            continue
        found.setdefault(trust_id, {})[event_id] = Published(
            event_id, event_type, record.topic, datetime.fromtimestamp(record.timestamp / 1000, UTC))
    return found
