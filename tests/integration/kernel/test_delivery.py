"""Outbox → Kafka → idempotent consumer on the real broker and server: nothing lost, nothing twice,
no message able to stop a partition."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from shared.events.envelope import encode, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.store.event_store import EventStore
from shared.store.outbox import OutboxRelay
from tests.conftest import metric_points
from tests.integration.kernel.helpers import (
    SEALING,
    consumer_for,
    create_effects_table,
    effects,
    eventually,
    observation,
    read_topic,
    running,
)


class RelayCrashed(Exception):
    pass


class CrashAfterSend(KafkaPublisher):
    """The real producer, but the process 'dies' after Kafka acknowledged and before the relay
    could delete the outbox rows: the worst moment for a relay to crash."""

    def __init__(self, real: KafkaPublisher) -> None:
        self.real = real

    async def send_all(self, records):  # type: ignore[no-untyped-def]
        await self.real.send_all(records)
        raise RelayCrashed


async def test_an_event_committed_before_the_relay_crashed_still_arrives_with_its_effect_once(
    engine, kernel, publisher, stack_settings, topic_prefix
):
    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    store = EventStore(kernel, sealing=SEALING)
    event = observation()
    async with engine.begin() as conn:
        await store.append(conn, "s", [event])

    crashing = OutboxRelay(engine, kernel, CrashAfterSend(publisher), topic_prefix=topic_prefix)
    with contextlib.suppress(RelayCrashed):
        await crashing.publish_pending()
    async with engine.connect() as conn:
        assert await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".outbox')) == 1

    restarted = OutboxRelay(engine, kernel, publisher, topic_prefix=topic_prefix)
    assert await restarted.drain() == 1
    copies = await read_topic(bootstrap, topic, expected=2)
    assert [r.headers for r in copies].count(copies[0].headers) == 2, "the crash should have sent it twice"

    consumer = consumer_for("tests.effects", engine, kernel, publisher, topic_prefix)
    async with running(bootstrap, consumer, topic):
        await eventually(lambda: effects(engine, kernel))
        # Give the second copy time to be consumed too before judging.
        await eventually(lambda: _inbox_count(engine, kernel, expected=1))
        await _wait_until_committed(engine, kernel, bootstrap, consumer.group_id, topic, 2)
    assert await effects(engine, kernel) == [(event.id, "being.safe.1")]


async def test_a_redelivered_event_has_its_effect_once(engine, kernel, publisher, stack_settings, topic_prefix):
    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    event = observation()
    key, headers, value = encode(event)
    for _ in range(3):
        await publisher.send(OutgoingRecord(topic, key, value, headers))

    consumer = consumer_for("tests.redelivery", engine, kernel, publisher, topic_prefix)
    async with running(bootstrap, consumer, topic):
        await _wait_until_committed(engine, kernel, bootstrap, consumer.group_id, topic, 3)
    # The same event again after the consumer restarted (a producer retry, a manual replay).
    for _ in range(2):
        await publisher.send(OutgoingRecord(topic, key, value, headers))
    restarted = consumer_for("tests.redelivery", engine, kernel, publisher, topic_prefix)
    async with running(bootstrap, restarted, topic):
        await _wait_until_committed(engine, kernel, bootstrap, restarted.group_id, topic, 5)
    lag = [value for labels, value in metric_points("flourish_consumer_lag") if labels["topic"] == topic]
    assert lag == [0], "every record was applied, so the group is not behind"

    assert await effects(engine, kernel) == [(event.id, "being.safe.1")]


async def test_poison_messages_go_to_the_dead_letter_topic_while_the_partition_keeps_flowing(
    engine, kernel, publisher, stack_settings, topic_prefix
):
    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    pupil = uuid.uuid4()  # one key: every record below lands in the same partition, in this order
    before, failing, after = observation(pupil), observation(pupil, statement_id="boom"), observation(pupil)
    key = str(pupil).encode()

    raw = AIOKafkaProducer(**bootstrap)
    await raw.start()
    try:
        for record in [
            encode(before),
            (key, [], b"not a cloud event"),
            (key, [("ce_specversion", b"1.0"), ("ce_type", b"flourish.nothing.Unknown.v1")], b"{}"),
            (key, encode(before)[1], b'{"pupil_id": "not-a-uuid"}'),
            (key, [("ce_specversion", b"\xff\xfe")], b"{}"),
            encode(failing),
            encode(after),
        ]:
            await raw.send_and_wait(topic, key=record[0], value=record[2], headers=record[1])
    finally:
        await raw.stop()

    consumer = consumer_for("tests.poison", engine, kernel, publisher, topic_prefix, fail_on="boom")
    async with running(bootstrap, consumer, topic):
        await _wait_until_committed(engine, kernel, bootstrap, consumer.group_id, topic, 7)

    applied = {event_id for event_id, _ in await effects(engine, kernel)}
    assert applied == {before.id, after.id}  # the failing one's effect was rolled back every time
    dead = await read_topic(bootstrap, consumer.dead_letter_topic, expected=5)
    reasons = [dict(r.headers)["flourish_dlq_reason"].decode() for r in dead]
    assert len(reasons) == 5
    assert "missing header ce_specversion" in reasons
    assert "unknown event type 'flourish.nothing.Unknown.v1': no model is registered for it" in reasons
    assert "header 'ce_specversion' is not UTF-8" in reasons
    assert "handler failed: ValueError" in reasons
    invalid_data = next(r for r in reasons if r.startswith("flourish.assessment.ObservationRecorded.v1: "))
    assert "pupil_id: Input should be a valid UUID" in invalid_data
    assert "not-a-uuid" not in invalid_data, "a reason must never echo the value (it may be personal data)"
    failed = next(r for r in dead if dict(r.headers)["flourish_dlq_reason"] == b"handler failed: ValueError")
    assert failed.value == encode(failing)[2] and dict(failed.headers)["flourish_dlq_attempts"] == b"3"


async def _inbox_count(engine, kernel, expected: int) -> bool:
    async with engine.connect() as conn:
        return await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".inbox')) == expected


async def _committed(bootstrap: Mapping[str, Any], group: str, topic: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def _wait_until_committed(engine, kernel, bootstrap, group, topic, count) -> None:  # type: ignore[no-untyped-def]
    async def done() -> bool:
        return await _committed(bootstrap, group, topic) >= count

    await eventually(done)


async def test_a_batch_that_meets_an_outage_comes_again_and_is_neither_lost_nor_dead_lettered(
    engine, kernel, publisher, stack_settings, topic_prefix
):
    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    first, second = observation(), observation()
    for event in (first, second):
        key, headers, value = encode(event)
        await publisher.send(OutgoingRecord(topic, key, value, headers))

    consumer = consumer_for("tests.outage", engine, kernel, publisher, topic_prefix)
    apply = consumer.handlers[type(first.data)]
    outages = iter([True, True, True])

    async def flaky(conn, envelope):  # type: ignore[no-untyped-def]
        if next(outages, False):
            # What asyncpg raises when PostgreSQL goes away mid-transaction.
            raise ConnectionResetError("connection lost")
        await apply(conn, envelope)

    consumer.handlers[type(first.data)] = flaky
    async with running(bootstrap, consumer, topic):
        await _wait_until_committed(engine, kernel, bootstrap, consumer.group_id, topic, 2)

    assert sorted(await effects(engine, kernel)) == sorted([(first.id, "being.safe.1"), (second.id, "being.safe.1")])
    assert await read_topic(bootstrap, consumer.dead_letter_topic, expected=1, timeout=2) == []


async def test_a_batch_handler_applies_runs_of_one_type_in_order_and_each_event_once(
    engine, kernel, publisher, stack_settings, topic_prefix
):
    from datetime import date

    from shared.events.assessment import ObservationRecorded, PupilEnrolled
    from shared.events.envelope import Envelope
    from shared.messaging.consumer import IdempotentConsumer
    from tests.integration.kernel.helpers import ACADEMY, TRUST

    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    pupil = uuid.uuid4()
    enrolled = Envelope(data=PupilEnrolled(pupil_id=pupil, enrolled_on=date(2026, 9, 3)), trust_id=TRUST,
                        academy_id=ACADEMY, source="/flourish/tests")
    ratings = [observation(pupil, statement_id=f"being.safe.{n}") for n in range(40)]
    sequence = [*ratings[:20], enrolled, *ratings[20:], ratings[0]]  # one type, another, the first again
    for envelope in sequence:
        key, headers, value = encode(envelope)
        await publisher.send(OutgoingRecord(topic, key, value, headers))

    applied: list[str] = []
    calls: list[int] = []

    async def apply_ratings(conn, run):  # type: ignore[no-untyped-def]
        calls.append(len(run))
        applied.extend(e.data.statement_id for e in run)

    async def apply_enrolment(conn, envelope):  # type: ignore[no-untyped-def]
        applied.append("enrolled")

    consumer = IdempotentConsumer(
        "tests.batches", engine, kernel, {PupilEnrolled: apply_enrolment}, publisher,
        topic_prefix=topic_prefix, batch_handlers={ObservationRecorded: apply_ratings}, sealing=SEALING,
    )
    async with running(bootstrap, consumer, topic):
        await _wait_until_committed(engine, kernel, bootstrap, consumer.group_id, topic, len(sequence))

    expected = [f"being.safe.{n}" for n in range(20)] + ["enrolled"] + [f"being.safe.{n}" for n in range(20, 40)]
    assert applied == expected
    assert len(calls) < len(ratings), "ratings were applied in runs, not one by one"


async def test_the_running_relay_is_woken_by_the_commit_not_by_its_poll(engine, kernel, publisher, stack_settings, topic_prefix):
    import asyncio

    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    store = EventStore(kernel, sealing=SEALING)
    # A poll interval far longer than the wait below: only NOTIFY can deliver in time.
    relay = OutboxRelay(engine, kernel, publisher, poll_interval_s=600, topic_prefix=topic_prefix)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await eventually(lambda: _is_leader(relay))
        for _ in range(2):  # the second proves the relay went back to listening after the first
            async with engine.begin() as conn:
                await store.append(conn, "s", [observation()])
            published = await _published_after(engine, kernel)
            assert published, "the relay did not publish after the commit woke it"
        assert len(await read_topic(bootstrap, topic, expected=2)) == 2
    finally:
        stop.set()
        await task


async def _is_leader(relay: OutboxRelay) -> bool:
    return relay.is_leader


async def _published_after(engine, kernel) -> bool:  # type: ignore[no-untyped-def]
    async def outbox_empty() -> bool:
        async with engine.connect() as conn:
            return await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".outbox')) == 0

    try:
        await eventually(outbox_empty, timeout=20)
        return True
    except AssertionError:
        return False
