"""Sealed events through the real outbox, Kafka and an idempotent consumer: what a child's events
say travels as ciphertext; a consumer whose key service is down waits and retries, never skips;
an event about an erased child is skipped and counted; a tampered sealed part is dead-lettered."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaProducer

from shared.events.assessment import ObservationRecorded
from shared.events.envelope import encode, topic_for
from shared.events.sealing import SEALED_KEY, EventSealing
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.consumer import IdempotentConsumer, RetryPolicy
from shared.store.event_store import EventStore
from shared.store.outbox import OutboxRelay
from tests.integration.kernel.helpers import (
    MemoryKeyring,
    create_effects_table,
    effects,
    eventually,
    observation,
    read_topic,
    record_effect,
    running,
)


def sealed_consumer(name, engine, kernel, publisher, prefix, keys):  # type: ignore[no-untyped-def]
    return IdempotentConsumer(name, engine, kernel, {ObservationRecorded: record_effect(kernel)}, publisher,
                              retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05),
                              topic_prefix=prefix, sealing=EventSealing(keys))


async def test_a_consumer_whose_key_service_is_down_retries_and_skips_nothing(
    engine, kernel, publisher, stack_settings, topic_prefix
):
    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    keys = MemoryKeyring()
    store = EventStore(kernel, sealing=EventSealing(keys))
    events = [observation(statement_id=f"being.secret.{n}") for n in range(3)]
    async with engine.begin() as conn:
        for event in events:
            await store.append(conn, f"pupil-{event.data.pupil_id}", [event])
    assert await OutboxRelay(engine, kernel, publisher, topic_prefix=topic_prefix).drain() == 3

    # On Kafka, as raw bytes: the statements and levels are sealed.
    records = await read_topic(bootstrap, topic, expected=3)
    assert len(records) == 3
    assert all(b"being.secret" not in r.value and b'"level":' not in r.value and SEALED_KEY.encode() in r.value
               for r in records)

    keys.down = True
    consumer = sealed_consumer("tests.sealed-down", engine, kernel, publisher, topic_prefix, keys)
    async with running(bootstrap, consumer, topic):
        asked = keys.asked
        await eventually(lambda: _more(keys, asked + 3), timeout=30)  # it keeps asking
        assert await effects(engine, kernel) == []
        keys.down = False  # the key service is back
        await eventually(lambda: _count(engine, kernel, 3), timeout=60)
    assert sorted(s for _, s in await effects(engine, kernel)) == [f"being.secret.{n}" for n in range(3)]
    dead = await read_topic(bootstrap, consumer.dead_letter_topic, expected=1, timeout=3)
    assert dead == [], "nothing was dead-lettered for want of a key"


async def test_an_erased_childs_event_is_skipped_and_a_tampered_one_dead_lettered(
    engine, kernel, publisher, stack_settings, topic_prefix
):
    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    keys = MemoryKeyring()
    store = EventStore(kernel, sealing=EventSealing(keys))
    erased, kept, tampered = observation(), observation(), observation()
    async with engine.begin() as conn:
        for event in (erased, kept):
            await store.append(conn, f"pupil-{event.data.pupil_id}", [event])
    assert await OutboxRelay(engine, kernel, publisher, topic_prefix=topic_prefix).drain() == 2
    keys.destroy(erased.data.pupil_id)
    # A sealed part whose ciphertext was altered on the way (one byte of the copy flipped).
    value = orjson.loads(await store.serialise(tampered))
    copy = value[SEALED_KEY]["by_pupil"][str(tampered.data.pupil_id)]
    value[SEALED_KEY]["by_pupil"][str(tampered.data.pupil_id)] = copy[:-2] + ("A" if copy[-2] != "A" else "B") + copy[-1]
    key, headers, _ = encode(tampered)
    raw = AIOKafkaProducer(**bootstrap)
    await raw.start()
    try:
        await raw.send_and_wait(topic, key=key, value=orjson.dumps(value), headers=headers)
    finally:
        await raw.stop()

    consumer = sealed_consumer("tests.sealed-erased", engine, kernel, publisher, topic_prefix, keys)
    async with running(bootstrap, consumer, topic):
        dead = await read_topic(bootstrap, consumer.dead_letter_topic, expected=1, timeout=30)
        await eventually(lambda: _count(engine, kernel, 1), timeout=30)
    assert await effects(engine, kernel) == [(kept.id, "being.safe.1")], "the erased child's event was not applied"
    assert len(dead) == 1 and dict(dead[0].headers)["ce_id"] == str(tampered.id).encode()
    assert b"does not open" in dict(dead[0].headers)["flourish_dlq_reason"]
    # Reading the store opens what it can and leaves the erased child's event out.
    async with engine.connect() as conn:
        stored = await store.read_all(conn, within=await store.snapshot(conn))
    assert [r.envelope.id for r in stored] == [kept.id]


async def _more(keys: MemoryKeyring, than: int) -> bool:
    await asyncio.sleep(0)
    return keys.asked >= than


async def _count(engine, kernel, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return len(await effects(engine, kernel)) >= expected
