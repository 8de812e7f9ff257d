"""The audit topics keep everything: no time-based deletion (retention.ms = -1).

Each service records its audit facts on its own topic, <prefix>audit.<service>, which only it may
write, so the topic says who recorded a fact (shared.messaging.provenance). The one shared
<prefix>audit topic they all used before is written no more; its history is still read here and
by recover.py, which take its facts' sources as they claim (they predate the per-producer topics).

Setting their retention is the admin identity's, never the reporting service's (whose ACLs allow no ALTER_CONFIGS):
in production the topics' KafkaTopic resources say so (Strimzi reconciles it); on the local stack
and in tests the admin step that makes the topics sets it (flourish/kafka_acls.py `provision`).
Kafka is also the ledger's witness (KafkaTopicWitness) and the record of what it should hold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from services.reporting.audit.domain.chain import Checkpoint
from services.reporting.audit.witness import WitnessConflict, WitnessUnavailable
from shared.events.registry import UnknownEventType, model_for
from shared.messaging.provenance import producer_of, wrong_producer
from shared.messaging.topics import AUDIT_CONTEXT, AUDIT_WITNESS, legacy_audit_topic, topics_of

log = logging.getLogger(__name__)

KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


class TopicConfigRefused(Exception):
    pass


async def keep_topic_forever(kafka: Mapping[str, Any], topic: str) -> None:
    """Set the topic's retention to forever, logged in as `kafka` says (only admin may)."""
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        responses = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=KEEP_FOREVER)])
    finally:
        await admin.close()
    for response in responses:
        for error_code, error_message, *_ in response.resources:
            if error_code:
                raise TopicConfigRefused(f"{topic}: error {error_code} {error_message or ''}".strip())


async def topic_retention(kafka: Mapping[str, Any], topic: str) -> dict[str, str]:
    """The topic's effective retention settings (for tests and operators; admin)."""
    admin = AIOKafkaAdminClient(**kafka)
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


# --- Kafka as a witness, and as the record of what the ledger should hold --------------------

CHECKPOINTS_CONTEXT = AUDIT_WITNESS


def ledger_topics(prefix: str) -> list[str]:
    """Every topic the ledger records from: the contexts' it records, each producer's audit
    facts, and the history of the shared audit topic they replaced."""
    from services.reporting.audit.consumers import CONTEXTS

    return [*(topic for context in CONTEXTS for topic in topics_of(context, prefix)), legacy_audit_topic(prefix)]


def recorded_source(topic: str, event_type: str, context: str, claimed: str, prefix: str) -> str | None:
    """The source the ledger records for an event read from `topic`: the topic's one producer;
    None when that producer cannot have written it (the live consumer dead-lettered it: never
    recorded). On the legacy shared audit topic, an audit fact's own claim (no producer owned it)."""
    if topic == legacy_audit_topic(prefix):
        return claimed if context == AUDIT_CONTEXT else None
    if wrong_producer(topic, event_type, context, claimed, prefix) is not None:
        return None
    return producer_of(topic, prefix)


async def read_topics(kafka: Mapping[str, Any], topics: Sequence[str]) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Every record on these topics, from the beginning up to their end when called (topics that
    do not exist yet hold nothing). No consumer group: nothing is committed, nobody is disturbed."""
    reader = AIOKafkaConsumer(**kafka, enable_auto_commit=False, group_id=None,
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

    def __init__(self, kafka: Mapping[str, Any], topic: str, ledger: str) -> None:
        self.kafka, self.topic, self.ledger = kafka, topic, ledger
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
                producer = AIOKafkaProducer(**self.kafka, acks="all",
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
                async for record in read_topics(self.kafka, [self.topic]):
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


async def ledger_events(kafka: Mapping[str, Any], prefix: str) -> dict[UUID, dict[UUID, Published]]:
    """Every event the ledger records, per trust, from the topics it records from (kept forever):
    headers only, no payload is parsed."""
    from services.reporting.audit.domain.facts import is_recorded

    recorded: dict[str, str | None] = {}  # the type's context, if the ledger records it
    found: dict[UUID, dict[UUID, Published]] = {}
    async for record in read_topics(kafka, ledger_topics(prefix)):
        headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
        event_type = headers.get("ce_type", "")
        if event_type not in recorded:
            try:
                model = model_for(event_type)
                recorded[event_type] = model.context if is_recorded(model) else None
            except UnknownEventType:
                recorded[event_type] = None
        context = recorded[event_type]
        if context is None or recorded_source(record.topic, event_type, context, headers.get("ce_source", ""),
                                              prefix) is None:
            continue
        try:
            trust_id, event_id = UUID(headers["ce_trustid"]), UUID(headers["ce_id"])
        except (KeyError, ValueError):
            continue
        found.setdefault(trust_id, {})[event_id] = Published(
            event_id, event_type, record.topic, datetime.fromtimestamp(record.timestamp / 1000, UTC))
    return found
