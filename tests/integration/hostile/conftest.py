"""Each service started for real in-process on a topic prefix of the test's own, and a producer
that writes whatever bytes a test likes, into the partition it names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from shared.messaging.clients import ADMIN, kafka_options


@pytest.fixture
def service_settings(stack_settings, topic_prefix, tmp_path):
    return stack_settings.model_copy(
        update={"topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json"}
    )


@pytest.fixture
async def raw_producer(stack_settings) -> AsyncIterator[AIOKafkaProducer]:
    # Room for a record as large as the broker takes (its default message.max.bytes, ~1 MiB).
    producer = AIOKafkaProducer(**kafka_options(stack_settings, ADMIN), acks="all",
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    yield producer
    await producer.stop()
