"""Reading a consumer's dead letters back: where each dead-lettered record came from.

A replay of history (a read-model rebuild) skips what the live consumer dead-lettered, so a
rebuild never has what the live read model never had, whatever order it reads the topics in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

Source = tuple[str, int, int]
"""A record's topic, partition and offset."""


async def dead_lettered_sources(kafka: Mapping[str, Any], dead_letter_topic: str) -> set[Source]:
    """Where every record on the dead-letter topic (up to its end now) came from. `kafka`: where and
    as whom (shared.messaging.clients.kafka_options)."""
    reader = AIOKafkaConsumer(**kafka, enable_auto_commit=False, group_id=None,
                              auto_offset_reset="earliest")
    await reader.start()
    try:
        partitions = [TopicPartition(dead_letter_topic, p) for p in sorted(reader.partitions_for_topic(dead_letter_topic) or ())]
        if not partitions:
            await reader._client.force_metadata_update()  # noqa: SLF001  (no public refresh in aiokafka)
            partitions = [TopicPartition(dead_letter_topic, p)
                          for p in sorted(reader.partitions_for_topic(dead_letter_topic) or ())]
        if not partitions:
            return set()  # nothing was ever dead-lettered
        # The end offsets first: asked once fetching has begun, they wait behind a fetch the broker
        # holds (fetch_max_wait_ms, 500 ms) when the topic has nothing to read.
        ends = await reader.end_offsets(partitions)
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        sources: set[Source] = set()
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            for tp, records in (await reader.getmany(*pending, timeout_ms=1000)).items():
                for record in records:
                    if record.offset < ends[tp]:
                        sources.add(_source(record.headers))
            pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}
        sources.discard(("", -1, -1))
        return sources
    finally:
        await reader.stop()


def _source(headers: list[tuple[str, bytes]] | None) -> Source:
    found = dict(headers or ())
    try:
        return (found["flourish_dlq_source_topic"].decode(), int(found["flourish_dlq_source_partition"]),
                int(found["flourish_dlq_source_offset"]))
    except (KeyError, ValueError, UnicodeDecodeError):
        return ("", -1, -1)  # not a dead letter of ours
