"""A benchmark never writes to the live platform (issue 18 item 5).

The adversary here is a careless benchmark: `make bench` beside `make up` once put ~300 bench
events on `flourish.consent`, through the live database's consent outbox. The test runs the
benchmark command line as `make bench` does (the consent group: a service started in-process,
its relay, its Kafka topics) at a tiny scale, and compares what the live platform has before and
after: the end offset of every `flourish.*` topic, the rows of every table in the live database's
own schemas, the schemas themselves, and that no bench database is left on the server.

It assumes no live platform (`make up`) is writing at the same time; the tests themselves never
write to the live database or the `flourish.` prefix (each has a database and a prefix of its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.messaging.clients import ADMIN, kafka_options
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
LIVE_PREFIX = "flourish."


async def _live_offsets(settings: Settings) -> dict[str, int]:
    options = kafka_options(settings, ADMIN)
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(LIVE_PREFIX))
    finally:
        await admin.close()
    if not topics:
        return {}
    consumer = AIOKafkaConsumer(*topics, **options)  # no group: reads nothing, commits nothing
    await consumer.start()
    try:
        offsets: dict[str, int] = {}
        for topic in topics:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(partitions) if partitions else {}
            offsets[topic] = sum(ends.values())
        return offsets
    finally:
        await consumer.stop()


async def _live_database(settings: Settings) -> tuple[dict[str, int], list[str]]:
    """Rows per table of the live database's schemas (every schema but PostgreSQL's own), and
    the databases whose names a benchmark gives its own."""
    conn = await asyncpg.connect(settings.sync_database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2")
        rows = {}
        for table in tables:
            name = f'"{table["table_schema"]}"."{table["table_name"]}"'
            try:
                rows[name] = await conn.fetchval(f"SELECT count(*) FROM {name}")
            except asyncpg.InsufficientPrivilegeError:
                rows[name] = -1  # not readable by this login: its presence still counts
        benches = [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'")]
        return rows, benches
    finally:
        await conn.close()


async def test_a_benchmark_leaves_the_live_platform_untouched(stack_for_tests) -> None:  # type: ignore[no-untyped-def]
    endpoints = stack_for_tests.endpoints
    live = Settings(database_url=endpoints.database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers)
    offsets_before = await _live_offsets(live)
    rows_before, benches_before = await _live_database(live)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "bench", "--only", "consent", "--scale", "0.02"],  # noqa: ASYNC221
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert any('"consent.decision.p99"' in line and '"loop": "asyncio"' in line for line in figures), run.stdout

    assert await _live_offsets(live) == offsets_before
    rows_after, benches_after = await _live_database(live)
    assert rows_after == rows_before  # the same tables (no bench schema) with the same rows
    assert sorted(benches_after) == sorted(benches_before)  # its own database is gone again
