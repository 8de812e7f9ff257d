"""Planning benchmark: StrandScored on Kafka → the suggestion is available (the score row is
committed in planning's read model; the suggestion is computed from it on read), p50/p99 at a
steady 500 events/s, beside raw aiokafka produce → consume at the same rate and record size."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from bench.common import ACADEMY, LOWER_IS_BETTER, Figure, info, own_database, own_state, paced, percentile, unique, wait_until
from bench.pipeline import raw_clients
from shared.events.assessment import StrandScored
from shared.events.envelope import Envelope, encode, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.settings import Settings

RATE = 500.0
WARMUP_S = 1.0
DURATION_S = 10.0


def _scores(count: int, trust: uuid.UUID) -> list[Envelope]:
    return [Envelope(data=StrandScored(
        assessment_id=uuid.uuid4(), pupil_id=uuid.uuid4(), framework_version="flourish-sample-1", strand="being",
        need_percents={"being.safe": 51.1, "being.special": 28.9, "being.needs-met": 28.9}, strand_percent=36.3,
        threshold_percent=64.0, threshold_met=False, working_at_strand="being",
        focus_statements=[f"being.{n}" for n in range(1, 30)], baseline=True, scored_at=datetime.now(UTC),
    ), trust_id=trust, academy_id=ACADEMY, source="/flourish/bench") for _ in range(count)]


async def run(scale: float = 1.0) -> list[dict[str, Any]]:
    from flourish.local.stack import ensure_stack

    endpoints = ensure_stack()
    prefix = unique("bench.") + "."
    async with own_database(endpoints.database_url, "planning") as database_url:
        return await _run(endpoints, database_url, prefix, max(1.0, DURATION_S * scale))


async def _run(endpoints: Any, database_url: str, prefix: str, duration_s: float = DURATION_S) -> list[dict[str, Any]]:
    from services.planning.app import app as planning_service

    settings = own_state(Settings(database_url=database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
                        topic_prefix=prefix, log_level="WARNING"), "planning")
    trust = uuid.uuid4()
    warm, timed = _scores(int(RATE * WARMUP_S), trust), _scores(int(RATE * duration_s), trust)
    sent: dict[uuid.UUID, float] = {}
    from flourish.kafka_acls import provision

    await provision(settings)  # the prefix's topics and the services' ACLs, as Kafka's admin
    app = planning_service(settings)
    publisher = KafkaPublisher(kafka_options(settings, ADMIN), client_id="bench-planning")
    await publisher.start()
    topic = topic_for("assessment", prefix)
    try:
        async with app.router.lifespan_context(app):
            engine = app.state.runtime.engine

            def sender(envelopes: list[Envelope]) -> Any:
                async def send(i: int) -> None:
                    key, headers, value = encode(envelopes[i])
                    sent[envelopes[i].data.assessment_id] = time.time()  # type: ignore[attr-defined]
                    await publisher.send(OutgoingRecord(topic, key, value, headers))

                return send

            async def applied(count: int) -> bool:
                async with engine.connect() as conn:
                    return int(await conn.scalar(text("SELECT count(*) FROM planning.strand_scores WHERE trust_id = :t"),
                                                 {"t": trust})) >= count

            await paced(len(warm), RATE, sender(warm))
            await wait_until(lambda: applied(len(warm)), 60, "planning warm-up")
            achieved = await paced(len(timed), RATE, sender(timed))
            await wait_until(lambda: applied(len(warm) + len(timed)), 60, "planning consumption")
            async with engine.connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT assessment_id, extract(epoch FROM applied_at) AS at FROM planning.strand_scores "
                    "WHERE assessment_id = ANY(:ids)"), {"ids": [e.data.assessment_id for e in timed]})).all()  # type: ignore[attr-defined]
                await conn.execute(text("DELETE FROM planning.strand_scores WHERE trust_id = :t"), {"t": trust})
                await conn.execute(text("DELETE FROM planning.pupils WHERE trust_id = :t"), {"t": trust})
                await conn.commit()
        ours = [(float(r.at) - sent[uuid.UUID(str(r.assessment_id))]) * 1000 for r in rows]
        info(f"planning.suggestion_available: {len(ours)} StrandScored at {achieved:.0f}/s; "
             f"p50 {percentile(ours, 50):.1f} ms, p99 {percentile(ours, 99):.1f} ms")
        raw = await _raw_latency(settings, timed)
    finally:
        await publisher.stop()
        from flourish.kafka_acls import deprovision

        await deprovision(settings, prefix)  # the prefix's topics and ACLs
    figures = [Figure(f"planning.strand_scored_to_suggestion.p{p}", percentile(ours, p), "ms",
                      f"aiokafka.produce_consume.latency.p{p}", percentile(raw, p), LOWER_IS_BETTER) for p in (50, 99)]
    import json

    return [json.loads(f.json_line()) for f in figures]


async def _raw_latency(settings: Settings, envelopes: list[Envelope]) -> list[float]:
    """Raw producer → raw consumer, same records, same rate: what Kafka alone costs."""
    sent: dict[bytes, float] = {}
    received: dict[bytes, float] = {}
    async with raw_clients(kafka_options(settings, ADMIN), settings.topic_prefix, 3) as (topic, producer, consumer):
        stop = asyncio.Event()

        async def consume() -> None:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        received[record.key] = now

        messages = [encode(e) for e in envelopes]
        futures: list[Any] = []

        async def send(i: int) -> None:
            key, headers, value = messages[i]
            sent[key] = time.perf_counter()
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))

        reader = asyncio.create_task(consume())
        try:
            await paced(len(messages), RATE, send)
            await asyncio.gather(*futures)

            async def all_in() -> bool:
                return len(received) >= len(messages)

            await wait_until(all_in, 60, "raw consumption")
        finally:
            stop.set()
            await reader
    return [(received[k] - sent[k]) * 1000 for k in sent]
