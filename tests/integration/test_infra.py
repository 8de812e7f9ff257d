"""The local stack launcher starts real PostgreSQL and Kafka servers, once, and both of them work."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from typer.testing import CliRunner

from flourish.cli.infra import app
from flourish.local.stack import StackEndpoints, ensure_stack, stack_status
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.topics import ensure_topics
from shared.settings import Settings

# The stack stays up after these tests: the other integration tests reuse it.
pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def endpoints() -> StackEndpoints:
    return ensure_stack()


def test_ensure_stack_is_idempotent(endpoints: StackEndpoints) -> None:
    pids_before = {item.name: item.pid for item in stack_status()}

    assert ensure_stack() == endpoints
    assert {item.name: item.pid for item in stack_status()} == pids_before


def test_endpoints_use_the_asyncpg_driver(endpoints: StackEndpoints) -> None:
    assert endpoints.database_url.startswith("postgresql+asyncpg://")
    assert kafka_options(Settings(), ADMIN)


async def test_ensure_stack_can_be_called_from_inside_an_event_loop(endpoints: StackEndpoints) -> None:
    assert ensure_stack() == endpoints


async def test_postgres_answers_select_1(endpoints: StackEndpoints) -> None:
    conn = await asyncpg.connect(endpoints.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()


async def test_kafka_round_trips_a_message(endpoints: StackEndpoints) -> None:
    topic = f"test-infra-{uuid.uuid4().hex}"
    await ensure_topics(kafka_options(Settings(), ADMIN), [topic], partitions=1)  # no client creates topics by naming them
    producer = AIOKafkaProducer(**kafka_options(Settings(), ADMIN), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"greeting")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_options(Settings(), ADMIN),
        group_id=f"test-infra-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()

    assert (message.key, message.value) == (b"greeting", b"hello")


def test_status_reports_both_components_healthy(endpoints: StackEndpoints) -> None:
    statuses = {item.name: item for item in stack_status()}

    assert set(statuses) == {"postgres", "kafka"}
    assert all(item.running and item.healthy for item in statuses.values())


def test_cli_status_lists_both_and_exits_0(endpoints: StackEndpoints) -> None:
    result = CliRunner().invoke(app, ["status"])

    assert result.exit_code == 0, result.output
    assert "postgres" in result.output and "kafka" in result.output
    assert "unhealthy" not in result.output
