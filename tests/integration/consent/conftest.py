"""The consent service started for real (migrations, Kafka, relay, roster consumer) in-process,
a fresh trust and academies per test, its own topic prefix, and tokens from the dev issuer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from sqlalchemy import func, select, text

from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.consent.app import app as consent_app
from services.consent.tables import kernel, pupils
from shared.auth import DevIssuer, Role
from shared.events.assessment import PupilEnrolled, PupilLeft
from shared.events.envelope import Envelope, encode, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.messaging.topics import ensure_topics
from tests.integration.kernel.helpers import eventually, read_topic

__all__ = ["Consent", "eventually", "read_topic"]


@dataclass
class Clock:
    """The service's clock; tests may move it (nothing here waits on real time)."""

    fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


@dataclass
class Consent:
    """One running consent service and the tenant a test works in."""

    app: FastAPI
    client: httpx.AsyncClient
    issuer: DevIssuer
    publisher: KafkaPublisher
    prefix: str
    bootstrap: Mapping[str, Any]
    clock: Clock
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)
    other_academy_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def token(self, role: Role, *, academies: list[uuid.UUID] | None = None, trust_id: uuid.UUID | None = None,
              subject: str = "staff-1", client: str | None = None) -> dict[str, str]:
        if role is Role.service and client is None:
            client = "reporting"  # a service token names its client: the reporting service's by default
        token = self.issuer.issue(subject, [role], trust_id or self.trust_id,
                                  self.academies if academies is None else academies, client=client)
        return {"Authorization": f"Bearer {token}"}

    @property
    def academies(self) -> list[uuid.UUID]:
        return [self.academy_id]

    @property
    def senco(self) -> dict[str, str]:
        return self.token(Role.senco, subject="senco-1")

    @property
    def dpo(self) -> dict[str, str]:
        return self.token(Role.dpo, academies=[], subject="dpo-1")

    @property
    def service(self) -> dict[str, str]:
        return self.token(Role.service, academies=[], subject="svc-reporting")

    @property
    def topic(self) -> str:
        return topic_for("consent", self.prefix)

    async def publish(self, *envelopes: Envelope) -> None:
        records = []
        for envelope in envelopes:
            key, headers, value = encode(envelope)
            records.append(OutgoingRecord(topic_for(envelope.data.context, self.prefix), key, value, headers))
        await self.publisher.send_all(records)

    def assessment_event(self, data: Any, academy_id: uuid.UUID | None = None) -> Envelope:
        return Envelope(data=data, trust_id=self.trust_id, academy_id=academy_id or self.academy_id,
                        source="/flourish/assessment")

    async def enrol(self, count: int = 1, *, academy_id: uuid.UUID | None = None,
                    left_on: date | None = None) -> list[uuid.UUID]:
        """Enrol pupils the way the assessment service does (its events on Kafka), and wait until
        the consent service's roster consumer has them."""
        ids = [uuid.uuid4() for _ in range(count)]
        envelopes = [self.assessment_event(PupilEnrolled(pupil_id=p, enrolled_on=date(2025, 9, 3)), academy_id)
                     for p in ids]
        if left_on is not None:
            envelopes += [self.assessment_event(PupilLeft(pupil_id=p, left_on=left_on), academy_id) for p in ids]
        await self.publish(*envelopes)
        engine = self.app.state.runtime.engine

        async def all_there() -> bool:
            condition = pupils.c.pupil_id.in_(ids)
            if left_on is not None:
                condition = condition & (pupils.c.left_on == left_on)
            async with engine.connect() as conn:
                return await conn.scalar(select(func.count()).where(condition)) == count  # type: ignore[no-any-return]

        await eventually(all_there)
        return ids

    async def drain(self) -> None:
        """Publish everything committed so far (the relay also runs on its own)."""
        await self.app.state.runtime.relay.drain()

    async def events(self, event_type: str | None = None) -> list[Any]:
        engine = self.app.state.runtime.engine
        query = select(kernel.events).where(kernel.events.c.trust_id == self.trust_id).order_by(
            kernel.events.c.global_position)
        if event_type:
            query = query.where(kernel.events.c.event_type == event_type)
        async with engine.connect() as conn:
            return list((await conn.execute(query)).mappings())

    def consent_body(self, purpose: str = "share_camhs", *, name: str = "Jane Example", **overrides: Any) -> dict[str, Any]:
        body = {"purpose": purpose, "decision": "granted",
                "given_by": {"name": name, "relationship": "mother"}, "method": "paper",
                "evidence_reference": "consent form filed in the office", "decided_at": self.clock().isoformat()}
        body.update(overrides)
        return body

    def withdrawal_body(self, *, name: str = "Jane Example", **overrides: Any) -> dict[str, Any]:
        body = {"given_by": {"name": name, "relationship": "mother"}, "method": "email",
                "withdrawn_at": self.clock().isoformat()}
        body.update(overrides)
        return body

    async def decision(self, pupil_id: uuid.UUID, category: str = "camhs", kind: str = "report",
                       headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.get("/sharing-decisions", headers=headers or self.service,
                                     params={"pupil_id": str(pupil_id), "agency_category": category, "data_kind": kind})


@pytest.fixture
def consent_settings() -> ConsentSettings:
    return ConsentSettings(run_retention_scheduler=False)


@asynccontextmanager
async def running_consent(stack_settings: Any, prefix: str, state_dir: Any, publisher: KafkaPublisher,
                          consent_settings: ConsentSettings, clock: Clock | None = None) -> AsyncIterator[Consent]:
    settings = stack_settings.model_copy(update={
        "topic_prefix": prefix, "state_dir": state_dir, "jwks_path": state_dir / "dev-issuer" / "jwks.json",
    })
    clock = clock or Clock()
    app = consent_app(ConsentServiceSettings(kernel=settings, consent=consent_settings), clock=clock)
    await ensure_topics(kafka_options(settings, ADMIN), [topic_for(c, prefix) for c in ("assessment", "planning")])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
            yield Consent(app, client, DevIssuer(settings), publisher, prefix,
                          kafka_options(settings, ADMIN), clock)


@pytest.fixture
async def consent(stack_settings, topic_prefix, tmp_path, publisher, consent_settings) -> AsyncIterator[Consent]:  # type: ignore[no-untyped-def]
    async with running_consent(stack_settings, topic_prefix, tmp_path, publisher, consent_settings) as service:
        yield service


async def scan_schema(engine: Any, schema: str, needles: list[str]) -> dict[str, list[str]]:
    """Every table of a schema, every row as text: which needles appear where."""
    found: dict[str, list[str]] = {}
    async with engine.connect() as conn:
        tables = (await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"),
                                     {"s": schema})).scalars().all()
        for table in tables:
            rows = (await conn.execute(text(f'SELECT t::text FROM "{schema}"."{table}" t'))).scalars().all()
            blob = "\n".join(rows).lower()
            hits = [needle for needle in needles if needle.lower() in blob]
            if hits:
                found[table] = hits
    return found


def raw_bytes(records: list[Any]) -> bytes:
    """Everything a Kafka record carries: key, headers and value."""
    parts = []
    for record in records:
        parts.append(record.key or b"")
        parts.append(record.value or b"")
        for name, value in record.headers or ():
            parts.append(name.encode())
            parts.append(value or b"")
    return b"\n".join(parts)


async def read_until(bootstrap: Mapping[str, Any], topic: str, done: Callable[[list[Any]], bool],
                     timeout: float = 30.0) -> list[Any]:
    """Every record on a topic from the beginning, read until `done(records)` holds.

    Waits for the records a test is about (by pupil, by type) rather than for a count: the
    consent schema is shared, so the relay may also publish other tests' leftover events here.
    """
    reader = AIOKafkaConsumer(topic, **bootstrap, auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await reader.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done(records):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{topic}: the expected records did not arrive within {timeout}s")
            for batch in (await reader.getmany(timeout_ms=300)).values():
                records.extend(batch)
    finally:
        await reader.stop()
    return records


def of_pupils(records: list[Any], *pupils: uuid.UUID) -> list[Any]:
    keys = {str(p).encode() for p in pupils}
    return [r for r in records if r.key in keys]


def types_of(records: list[Any]) -> list[str]:
    return [dict(r.headers)["ce_type"].decode() for r in records]
