"""Crashes and restarts under load (issue 9, item 2): a stack of the test's own (Kafka, PostgreSQL),
the four services as processes, steady traffic through the public API the whole time; kill -9 each
service in turn, restart the broker, restart PostgreSQL; then reconcile every accepted command
against the event store and the read model, and the read model against a rebuild from history.

The figures (commands sent, accepted, effects, lost, duplicated, seconds to recover from each fault)
are printed and written to .flourish/reliability-figures.json; docs/reliability.md explains them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.load import COMPLETE, OBSERVE, Load, Watcher, reconcile, setup_tenant
from flourish.local.services import kill_service, platform_environment, start_services, stop_services
from flourish.local.stack import ensure_stack, restart_kafka, restart_postgres, stop_stack
from services.reporting.readmodels.rebuild import partitions_of, rebuild
from services.reporting.readmodels.tables import NAMES, SCHEMA
from shared.auth import DevIssuer
from shared.events.envelope import topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.settings import STATE_DIR, Settings

STATE = STATE_DIR / "reliability"
FIGURES = STATE_DIR / "reliability-figures.json"
PORTS = {"assessment": 18301, "planning": 18302, "consent": 18303, "reporting": 18304}
RATE_PER_S = 12.0
RECOVERY_TIMEOUT_S = 120.0

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def platform() -> Iterator[Settings]:
    """The test's own stack (Kafka on 29092, PostgreSQL on 25432, in .flourish/reliability: the
    shared stack is never touched) and the four services on it as processes."""
    settings = Settings(
        database_url="postgresql+asyncpg://flourish:flourish@127.0.0.1:25432/flourish",
        kafka_bootstrap_servers="127.0.0.1:29092", state_dir=STATE, manage_stack=True, topic_prefix="reliability.",
        **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in PORTS.items()},
    )
    _tear_down(settings)  # what a run that died left behind
    ensure_stack(settings)
    try:
        start_services(settings, platform_environment(settings))
        yield settings
    finally:
        _tear_down(settings)


def _tear_down(settings: Settings) -> None:
    stop_services(settings)
    stop_stack(settings)
    shutil.rmtree(STATE, ignore_errors=True)


def _restart_service(name: str) -> Callable[[Settings], None]:
    def fault(settings: Settings) -> None:
        assert kill_service(settings, name) is not None, f"{name} was not running"
        start_services(settings, platform_environment(settings))

    return fault


FAULTS: list[tuple[str, Callable[[Settings], object]]] = [
    *((f"kill -9 {name}", _restart_service(name)) for name in PORTS),
    ("kill -9 kafka, start it", lambda settings: restart_kafka(settings, crash=True)),
    ("kill -9 postgres, start it", lambda settings: restart_postgres(settings, crash=True)),
]


async def test_every_accepted_command_has_exactly_one_effect_through_crashes_and_restarts(platform: Settings) -> None:
    settings = platform
    recovery: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(base_url=settings.assessment_url, timeout=10) as client:
        tenant = await setup_tenant(client, DevIssuer(settings), pupils=40)
        async with Watcher(settings.sync_database_url) as watcher:
            load = Load(client, tenant, watcher=watcher, assessment_every_s=2.0, retry_for_s=RECOVERY_TIMEOUT_S)
            driving = asyncio.create_task(load.run(RATE_PER_S))
            await asyncio.sleep(5)
            for name, inject in FAULTS:
                fault_at = time.monotonic()
                await asyncio.to_thread(inject, settings)
                recovery[name] = await _recovery(load, fault_at, time.monotonic())
                await asyncio.sleep(2)  # steady traffic again before the next fault
            load.stop()
            await driving
            drained = await watcher.drained(60)
    reconciled = await reconcile(settings.sync_database_url, tenant.trust_id, load.commands)
    await _caught_up(settings)
    stored, published = await _store_and_topic(settings, tenant.trust_id)
    live = await _read_models(settings)
    await rebuild(settings)
    rebuilt = await _read_models(settings)

    latencies = sorted(load.latencies_s(OBSERVE))
    figures = {
        **reconciled.as_dict(),
        "observations": len(load.of_kind(OBSERVE)), "assessments_completed": sum(c.accepted for c in load.of_kind(COMPLETE)),
        "retried": sum(c.attempts > 1 for c in load.commands), "rate_per_s": RATE_PER_S,
        "events_stored": len(stored), "events_missing_from_kafka": len(stored - set(published)),
        "events_published_twice": sum(n - 1 for n in published.values()),  # the relay's at-least-once
        "faults": recovery, "dead_letters": await _dead_letters(settings),
        "latency_p50_s": round(latencies[len(latencies) // 2], 3), "latency_max_s": round(latencies[-1], 3),
        "read_model_rows": {name: len(rows) for name, rows in live.items()},
    }
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nreliability figures: {json.dumps(figures)}")

    assert drained, "some accepted commands never showed up in the reporting read model"
    assert reconciled.lost == 0 and reconciled.duplicated == 0, reconciled.problems[:20]
    assert figures["events_missing_from_kafka"] == 0 and stored, figures
    assert reconciled.unanswered == 0 and reconciled.rejected == 0 and figures["dead_letters"] == 0, figures
    assert reconciled.accepted == reconciled.sent > 0 and figures["retried"] > 0, figures
    assert figures["assessments_completed"] > 0 and live["rm_observations"], figures
    for name in NAMES:
        assert live[name] == rebuilt[name], f"{name}: the live read model differs from a rebuild from history"


async def _recovery(load: Load, fault_at: float, back_at: float) -> dict[str, float]:
    """Wait until every observation sent while the fault lasted (and the first one after) is in
    the read model. restart_s: how long the fault lasted (killed → ready again); recovered_s: fault
    → the last of them visible; worst_delay_s: the longest any of them took from sent to visible."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        during = load.sent_between(fault_at, back_at)
        after = load.sent_between(back_at, float("inf"))[:1]
        if after and all(c.visible_at is not None for c in during + after):
            break
        assert time.monotonic() < deadline, "the platform did not recover"
        await asyncio.sleep(0.1)
    window = during + after
    return {"restart_s": round(back_at - fault_at, 1),
            "recovered_s": round(max(c.visible_at or 0 for c in window) - fault_at, 1),
            "worst_delay_s": round(max((c.visible_at or 0) - c.sent_at for c in window), 1)}


async def _caught_up(settings: Settings, timeout_s: float = 60) -> None:
    """Wait until every consumer group on the test's stack has committed every record it reads."""
    admin = AIOKafkaAdminClient(**kafka_options(settings, ADMIN))
    consumer = AIOKafkaConsumer(**kafka_options(settings, ADMIN))
    await admin.start()
    await consumer.start()
    try:
        groups = [group for group, _ in await admin.list_consumer_groups()]
        assert f"{settings.topic_prefix}reporting.readmodels" in groups, groups
        deadline = time.monotonic() + timeout_s
        while True:
            behind = {}
            for group in groups:
                committed = await admin.list_consumer_group_offsets(group)
                ends = await consumer.end_offsets(list(committed))
                behind.update({(group, tp.topic, tp.partition): ends[tp] - meta.offset
                               for tp, meta in committed.items() if ends[tp] > meta.offset})
            if not behind:
                return
            assert time.monotonic() < deadline, f"consumers still behind: {behind}"
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()


async def _dead_letters(settings: Settings) -> int:
    """Records on the dead-letter topics: an event a consumer gave up on during a fault."""
    consumer = AIOKafkaConsumer(**kafka_options(settings, ADMIN))
    await consumer.start()
    try:
        topics = [t for t in await consumer.topics() if t.startswith(f"{settings.topic_prefix}dlq.")]
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        if not partitions:
            return 0
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        return sum(ends[tp] - starts[tp] for tp in partitions)
    finally:
        await consumer.stop()


async def _store_and_topic(settings: Settings, trust_id: uuid.UUID) -> tuple[set[str], Counter[str]]:
    """The tenant's event ids in the assessment event store, and how often each is on its topic."""
    conn = await asyncpg.connect(settings.sync_database_url)
    try:
        stored = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM assessment.events WHERE trust_id = $1",
                                                               trust_id)}
    finally:
        await conn.close()
    consumer = AIOKafkaConsumer(**kafka_options(settings, ADMIN), enable_auto_commit=False)
    await consumer.start()
    published: Counter[str] = Counter()
    try:
        partitions = await partitions_of(consumer, topic_for("assessment", settings.topic_prefix))
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for record in records:
                    ce_id = dict(record.headers).get("ce_id", b"").decode()
                    if ce_id in stored:
                        published[ce_id] += 1
    finally:
        await consumer.stop()
    return stored, published


async def _read_models(settings: Settings) -> dict[str, set[tuple[object, ...]]]:
    conn = await asyncpg.connect(settings.sync_database_url)
    try:
        return {name: {tuple(row) for row in await conn.fetch(f'SELECT * FROM "{SCHEMA}"."{name}"')} for name in NAMES}
    finally:
        await conn.close()
