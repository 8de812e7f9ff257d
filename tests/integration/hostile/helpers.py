"""Hostile records for the topics a service's consumers read, and what the consumers must make of
them: two trusts (a pupil and an academy in each), the sequence of records per topic, and reads of
the database and the dead-letter topics to check the outcome."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.events.assessment import PupilEnrolled, PupilLeft
from shared.events.consent import PupilErased, RetentionExpired
from shared.events.envelope import Envelope, Headers, encode, topic_for
from shared.events.registry import Event
from shared.messaging.consumer import IdempotentConsumer
from shared.messaging.topics import AUDIT_CONTEXT, audit_fact_topic
from tests.contract.test_cloudevents import example

# Events that take something away: the last resort as a consumer's sample, so one consumer's
# valid event does not erase the pupil another consumer's checks are about.
DESTRUCTIVE = (PupilErased, RetentionExpired, PupilLeft)
# Close to the broker's largest record (message.max.bytes, 1 MiB by default).
OVERSIZED_BYTES = 1_020_000


@dataclass(frozen=True)
class Tenancy:
    """Trust A with academy A1 and pupil P; trust B with academy B1 and pupil Q."""

    trust_a: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_a: uuid.UUID = field(default_factory=uuid.uuid4)
    pupil_p: uuid.UUID = field(default_factory=uuid.uuid4)
    trust_b: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_b: uuid.UUID = field(default_factory=uuid.uuid4)
    pupil_q: uuid.UUID = field(default_factory=uuid.uuid4)

    def enrolments(self) -> list[Envelope]:
        return [envelope(about(PupilEnrolled, self.pupil_p), self.trust_a, self.academy_a),
                envelope(about(PupilEnrolled, self.pupil_q), self.trust_b, self.academy_b)]


@dataclass(frozen=True)
class Record:
    """One record to publish, and what it is meant to be."""

    kind: str  # a key of EXPECTED_REASON, or valid
    key: bytes
    value: bytes | None
    headers: Headers
    model: type[Event] | None = None
    event_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Sent:
    record: Record
    topic: str
    offset: int


EXPECTED_REASON = {
    "garbage": "missing header ce_specversion",
    "binary-header": "is not UTF-8",
    "tombstone": "has no value",
    "nested": "depth limit exceeded",
    "unknown-type": "unknown event type",
    "invalid-data": "pupil_id",
    "oversized": "over the limit",
    "wrong-trust": "tenant mismatch: pupil_id",
    "wrong-academy": "tenant mismatch: ce_academyid",
}


def handled(consumer: IdempotentConsumer) -> set[type[Event]]:
    return {*consumer.handlers, *consumer.batch_handlers}


def sample_type(consumer: IdempotentConsumer, context: str) -> type[Event]:
    """The event this consumer is tested with on a context's topic: one it handles, about a pupil."""
    candidates = sorted(about_pupils(consumer, context), key=lambda m: (issubclass(m, DESTRUCTIVE), m.event_type))
    assert candidates, f"{consumer.name} reads {context} but handles no event about a pupil there: say how to test it"
    return candidates[0]


def about(model: type[Event], pupil: uuid.UUID) -> Event:
    """A valid instance of any event model, about the pupil (validated, as the consumer will)."""
    update: dict[str, Any] = {"pupil_id": pupil}
    if "pupil_ids" in model.model_fields:
        update["pupil_ids"] = [pupil]
    return model.model_validate({**example(model).model_dump(), **update})


# Audit facts are sent on the reporting service's own audit topic (publish), naming it as their
# recorder: any other source there is refused as from the wrong producer (shared.messaging.provenance).
AUDIT_PRODUCER = "reporting"


def envelope(data: Event, trust: uuid.UUID, academy: uuid.UUID) -> Envelope:
    source = f"/flourish/{AUDIT_PRODUCER}" if data.context == AUDIT_CONTEXT else "/flourish/tests/hostile"
    return Envelope(data=data, trust_id=trust, academy_id=academy, source=source)


def as_record(kind: str, env: Envelope) -> Record:
    key, headers, value = encode(env)
    return Record(kind, key, value, headers, type(env.data), env.id)


def about_pupils(consumer: IdempotentConsumer, context: str) -> set[type[Event]]:
    """Every event type the consumer handles on a context's topic that is about a pupil."""
    return {m for m in handled(consumer) if m.context == context and "pupil_id" in m.model_fields}


def hostile_sequence(context: str, wrong: Sequence[type[Event]], valid: Sequence[type[Event]],
                     tenancy: Tenancy) -> list[Record]:
    """What goes onto one topic, in one partition: every kind of hostile record, a wrong trust
    and a wrong academy for every type in `wrong`, then a valid event of each type in `valid`."""
    t = tenancy
    first = valid[0]
    _, headers, _ = encode(envelope(about(first, t.pupil_p), t.trust_a, t.academy_a))
    key = str(t.pupil_p).encode()
    unknown = [(n, f"flourish.{context}.NoSuchEvent.v1".encode() if n == "ce_type" else v) for n, v in headers]
    absurd = {**json.loads(about(first, t.pupil_p).model_dump_json()), "padding": "x" * OVERSIZED_BYTES}
    records = [
        Record("garbage", key, bytes(range(256)) * 4, []),
        Record("binary-header", key, b"{}", [(n, b"\xff\xfe" if n == "ce_type" else v) for n, v in headers]),
        Record("tombstone", key, None, headers, first),
        Record("nested", key, b'{"pupil_id": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", headers, first),
        Record("unknown-type", key, about(first, t.pupil_p).model_dump_json().encode(), unknown),
        Record("invalid-data", key, b'{"pupil_id": "not-a-uuid"}', headers, first),
        Record("oversized", key, json.dumps(absurd).encode(), headers, first),
    ]
    for model in wrong:
        records.append(as_record("wrong-trust", envelope(about(model, t.pupil_p), t.trust_b, t.academy_b)))
        records.append(as_record("wrong-academy", envelope(about(model, t.pupil_p), t.trust_a, t.academy_b)))
    records += [as_record("valid", envelope(about(model, t.pupil_p), t.trust_a, t.academy_a)) for model in valid]
    return records


async def publish(producer: AIOKafkaProducer, prefix: str, context: str, records: Iterable[Record]) -> list[Sent]:
    """Into partition 0 of the context's topic (audit facts: the reporting service's audit-fact
    topic), in order; returns where each record landed."""
    topic = audit_fact_topic(AUDIT_PRODUCER, prefix) if context == AUDIT_CONTEXT else topic_for(context, prefix)
    sent = []
    for record in records:
        metadata = await (await producer.send(topic, value=record.value, key=record.key, headers=record.headers,
                                              partition=0))
        sent.append(Sent(record, topic, metadata.offset))
    return sent


async def seed_rosters(engine: AsyncEngine, producer: AIOKafkaProducer, prefix: str, tenancy: Tenancy,
                       consumers: Sequence[IdempotentConsumer]) -> list[Table]:
    """Make P (trust A) and Q (trust B) known to every roster: from enrolment events where a
    consumer of the service learns the roster from them, else (the assessment service, whose
    roster is its own truth) as rows the way its import writes them."""
    rosters = list({c.roster.fullname: c.roster for c in consumers if c.roster is not None}.values())
    if any(PupilEnrolled in handled(c) for c in consumers):
        await publish(producer, prefix, "assessment", [as_record("valid", e) for e in tenancy.enrolments()])
    else:
        async with engine.begin() as conn:
            for e in tenancy.enrolments():
                for roster in rosters:
                    extras = {"on_roll": True, "enrolled_on": date.today()}
                    await conn.execute(roster.insert().values(
                        pupil_id=e.data.pupil_id, trust_id=e.trust_id, academy_id=e.academy_id,  # type: ignore[attr-defined]
                        **{k: v for k, v in extras.items() if k in roster.c}))
    return rosters


async def roster_rows(engine: AsyncEngine, roster: Table, pupils: Sequence[uuid.UUID]) -> set[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(roster.select().with_only_columns(
            roster.c.pupil_id, roster.c.trust_id, roster.c.academy_id).where(roster.c.pupil_id.in_(pupils)))
        return {tuple(row) for row in rows}


async def applied(engine: AsyncEngine, schema: str, consumer: str, event_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of the events the consumer applied: its inbox, written in the transaction of the effect."""
    async with engine.connect() as conn:
        rows = await conn.execute(text(f'SELECT event_id FROM "{schema}".inbox WHERE consumer = :c '
                                       "AND event_id = ANY(CAST(:ids AS uuid[]))"), {"c": consumer, "ids": list(event_ids)})
        return {row[0] for row in rows}


async def tenant_tables(engine: AsyncEngine, schema: str) -> list[tuple[str, bool]]:
    """Every table of the schema with a trust_id column, from the catalog (a new one is covered),
    and whether it has an academy_id too."""
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            """
            SELECT c.table_name, bool_or(a.column_name IS NOT NULL)
            FROM information_schema.columns c
            JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
              AND t.table_type = 'BASE TABLE'
            LEFT JOIN information_schema.columns a ON a.table_schema = c.table_schema AND a.table_name = c.table_name
              AND a.column_name = 'academy_id'
            WHERE c.table_schema = :schema AND c.column_name = 'trust_id'
            GROUP BY c.table_name ORDER BY c.table_name
            """), {"schema": schema})
        return [(row[0], bool(row[1])) for row in rows]


async def rows_of_trust(engine: AsyncEngine, schema: str, trust: uuid.UUID) -> dict[str, list[str]]:
    """Every row the trust has in the schema, as JSON: what must not change under hostile events."""
    snapshot = {}
    async with engine.connect() as conn:
        for table, _ in await tenant_tables(engine, schema):
            rows = await conn.execute(text(f'SELECT to_jsonb(t)::text FROM "{schema}"."{table}" t WHERE trust_id = :t'),
                                      {"t": trust})
            snapshot[table] = sorted(row[0] for row in rows)
    return snapshot


async def rows_of_academy_in_trust(engine: AsyncEngine, schema: str, trust: uuid.UUID, academy: uuid.UUID) -> dict[str, int]:
    """Rows that put the academy in the trust, per table that has any."""
    found = {}
    async with engine.connect() as conn:
        for table, has_academy in await tenant_tables(engine, schema):
            if has_academy:
                count = await conn.scalar(text(f'SELECT count(*) FROM "{schema}"."{table}" '
                                               "WHERE trust_id = :t AND academy_id = :a"), {"t": trust, "a": academy})
                if count:
                    found[table] = count
    return found
