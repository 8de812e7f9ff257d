"""Reporting's read models: rebuilding them from history beside a raw aiokafka read of the same
events, and rendering the intervention report's HTML.

The history is sealed as the services seal it (each event's personal fields under its pupil's data
key), so the rebuild opens every event as it does in production; the keyring is in memory (no key
service round trips). `reporting.rebuild_rate` is the whole rebuild (shadow tables, both readers'
start, the replay, the swap); `reporting.rebuild_replay_rate` the replay alone, which is what grows
with the history. Both beside the raw read of the same topics in the same run.

    python -m bench.reporting      (or `await bench.reporting.run(scale)`)
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import (
    ACADEMY,
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    BenchKeyring,
    Figure,
    delete_topics,
    info,
    own_database,
    own_state,
    unique,
)
from services.reporting.readmodels.rebuild import partitions_of
from shared.events.assessment import Level, ObservationRecorded, StrandScored
from shared.events.envelope import Envelope, encode, topic_for
from shared.events.sealing import EventSealing
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.settings import Settings

EVENTS = 60_000  # × --scale
RENDERS = 50


def _history(count: int, trust: uuid.UUID) -> list[Envelope]:
    """Mostly observations, a strand score per 45 of them: what assessments produce."""
    now = datetime.now(UTC)
    events: list[Envelope] = []
    pupil, assessment = uuid.uuid4(), uuid.uuid4()
    for n in range(count):
        if n % 46 == 45:
            data: Any = StrandScored(assessment_id=assessment, pupil_id=pupil, framework_version="flourish-sample-1",
                                     strand="being", need_percents={"being.safe": 51.1, "being.special": 28.9,
                                                                    "being.needs-met": 28.9},
                                     strand_percent=36.3, threshold_percent=64, threshold_met=False,
                                     working_at_strand="being", baseline=True, scored_at=now)
            pupil, assessment = uuid.uuid4(), uuid.uuid4()
        else:
            data = ObservationRecorded(observation_id=uuid.uuid4(), pupil_id=pupil, assessment_id=assessment,
                                       framework_version="flourish-sample-1", statement_id=f"being.{n % 46 + 1}",
                                       level=Level.DEVELOPING, observer_id="staff-1", observed_at=now)
        events.append(Envelope(data=data, trust_id=trust, academy_id=ACADEMY, source="/flourish/assessment"))
    return events


async def run(scale: float = 1.0) -> list[dict[str, Any]]:
    from flourish.local.stack import ensure_stack

    endpoints = ensure_stack()
    prefix = unique("bench.") + "."
    topics = [topic_for(c, prefix) for c in ("assessment", "planning")]
    async with own_database(endpoints.database_url, "reporting") as database_url:
        settings = own_state(Settings(database_url=database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
                            topic_prefix=prefix, log_level="WARNING"), "reporting")
        try:
            figures, stages = await _run(settings, topics, max(1000, int(EVENTS * scale)))
        finally:
            await delete_topics(kafka_options(settings, ADMIN), topics)
            from flourish.kafka_acls import deprovision

            await deprovision(settings, prefix)  # the prefix's ACLs and any topic left
    lines = [json.loads(f.json_line()) for f in figures]
    for line in lines:
        if line["name"].startswith("reporting.rebuild"):
            line["stages_us_per_event"] = stages
    return lines


async def _run(settings: Settings, topics: list[str], events: int) -> tuple[list[Figure], dict[str, float]]:
    from services.reporting.readmodels.rebuild import rebuild
    from shared.store.db import create_engine

    engine = create_engine(settings)
    from flourish.kafka_acls import provision

    await provision(settings)  # the prefix's topics and reporting's ACLs (the rebuild reads as reporting)
    publisher = KafkaPublisher(kafka_options(settings, ADMIN), client_id="bench-reporting")
    keys = BenchKeyring()
    sealing = EventSealing(keys)
    await publisher.start()
    try:
        records = []
        for envelope in _history(events, uuid.uuid4()):
            key, headers, _ = encode(envelope)
            value = orjson.dumps(await sealing.seal(envelope.data, envelope.id, envelope.trust_id))
            records.append(OutgoingRecord(topics[0], key, value, headers))
        for start in range(0, len(records), 5000):
            await publisher.send_all(records[start:start + 5000])
    finally:
        await publisher.stop()
    info(f"reporting: {events} sealed events on {topics[0]}")

    raw_rate = await _raw_read(settings, topics)
    result = await rebuild(settings, engine, keyring=keys)
    await engine.dispose()
    assert result.events == events == result.applied, result
    replay_rate = result.events / result.replay_seconds
    stages = await _stages(records, keys)
    stages["kafka_fetch"] = round(1e6 / raw_rate, 1)
    stages["replay"] = round(1e6 / replay_rate, 1)
    # The replay fetches the next batch while it decodes this one: where the fetch's time hides
    # behind decoding, the remainder is negative, and says so.
    stages["rest (COPY, loop, bookkeeping; < 0 where the fetch overlapped decoding)"] = round(
        stages["replay"] - sum(v for k, v in stages.items() if k != "replay"), 1)
    info(f"reporting: µs per event {stages}")
    info(f"reporting: rebuilt {result.events} events in {result.seconds:.2f}s (replay {result.replay_seconds:.2f}s)")
    render_ms = _render_ms()
    raw = f"raw aiokafka read of the same {events} events (no decode, no database)"
    return ([
        Figure("reporting.rebuild_rate", result.events_per_second, "events/s", raw, raw_rate, HIGHER_IS_BETTER),
        Figure("reporting.rebuild_replay_rate", replay_rate, "events/s", raw, raw_rate, HIGHER_IS_BETTER),
        Figure("reporting.rebuild_rate_vs_goal", result.events_per_second, "events/s",
               "the goal: 50,000 events/s", 50_000, HIGHER_IS_BETTER),
        Figure("reporting.report_html_render", render_ms, "ms", "the goal: 50 ms per report", 50.0, LOWER_IS_BETTER),
    ], stages)


async def _stages(records: list[OutgoingRecord], keys: BenchKeyring) -> dict[str, float]:
    """The replay's per-event stages timed one by one on the same records, in this process, as the
    rebuild runs them (a key asked for once per pupil, the collector off): µs per event."""
    from services.reporting.readmodels.bulk import Fold
    from services.reporting.readmodels.erasure import Remembered
    from services.reporting.readmodels.tables import SHADOW, tables
    from shared.events.envelope import decode_wire

    sealing = EventSealing(keys, remember=True)
    for record in records:  # every key known, as after the rebuild's first sight of each pupil
        wire = decode_wire(record.headers, record.value)
        await sealing.open(wire.model, wire.data, wire.id, wire.trust_id)
    count = len(records)
    gc.disable()
    try:
        started = time.perf_counter()
        head = [(record.headers, record.value) for record in records]
        wires = [decode_wire(headers, value) for headers, value in head]
        decoded = time.perf_counter()
        events = [await sealing.open(w.model, w.data, w.id, w.trust_id) for w in wires]
        opened = time.perf_counter()
        envelopes = [w.envelope(e) for w, e in zip(wires, events, strict=True) if e is not None]
        wrapped = time.perf_counter()
        Fold(tables(SHADOW), Remembered()).add(envelopes)
        folded = time.perf_counter()
    finally:
        gc.enable()
    per = 1e6 / count
    return {"decode_wire (headers, JSON)": round((decoded - started) * per, 1),
            "open (AES-GCM, payload validation)": round((opened - decoded) * per, 1),
            "envelope": round((wrapped - opened) * per, 1), "fold": round((folded - wrapped) * per, 1)}


async def _raw_read(settings: Settings, topics: list[str]) -> float:
    consumer = AIOKafkaConsumer(**kafka_options(settings, ADMIN), enable_auto_commit=False,
                                group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        parts = [tp for t in topics for tp in await partitions_of(consumer, t)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        started, read = time.perf_counter(), 0
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            read += sum(len(rs) for rs in batch.values())
        return read / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _render_ms() -> float:
    from services.reporting.readmodels.report import Framework, ReportData, render_html

    statements = [{"number": n, "text": f"Statement {n}"} for n in range(1, 46)]
    framework = Framework.from_document({"threshold_percent": 64, "strands": [{"id": "being", "name": "Being", "needs": [
        {"id": "being.safe", "name": "Being Safe", "statements": statements[:15]},
        {"id": "being.special", "name": "Being Special", "statements": statements[15:30]},
        {"id": "being.needs-met", "name": "Having Needs Met", "statements": statements[30:]}]}]})
    day = datetime(2026, 1, 1, tzinfo=UTC)
    scores = [SimpleNamespace(assessment_id=i, strand="being", baseline=i == 0, working_at_strand="being",
                              need_percents={"being.safe": 51 + 9 * i, "being.special": 29 + 14 * i,
                                             "being.needs-met": 29 + 6 * i},
                              strand_percent=36 + 10 * i, threshold_percent=64, threshold_met=False,
                              focus_statements=[f"being.{n}" for n in (3, 8, 12, 25)], scored_at=day + timedelta(days=90 * i))
              for i in range(3)]
    levels = {i: {f"being.{n}": ["rarely", "emerging", "developing", "secure"][(n + i) % 4] for n in range(1, 46)}
              for i in range(3)}
    plans = [{"targets": ["being.3", "being.8"], "activities": ["Sand tray"], "frequency": "2 × 30 min a week",
              "sessions": 15, "minutes": 450}]
    data = ReportData("M", "4", framework, scores, plans, levels)
    started = time.perf_counter()
    for _ in range(RENDERS):
        render_html(data)
    return (time.perf_counter() - started) * 1000 / RENDERS


if __name__ == "__main__":
    for line in asyncio.run(run()):
        print(json.dumps(line))
