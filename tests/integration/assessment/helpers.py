"""Building blocks for the assessment service's tests on the real stack: the service started for
real beside the consent service (its data keys, erasure, retention clocks), a tenant of its own per
test (the `assessment` schema is shared), tokens and roster files."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.assessment.app import app as assessment_app
from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.consent.app import app as consent_app
from shared.auth import DevIssuer, Role
from shared.events.registry import model_for
from shared.events.sealing import open_data
from shared.settings import Settings

CONSENT_URL = "http://consent"

SAMPLE = "flourish-sample-1"
HEADER = "UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group"


@dataclass
class Stack:
    """The assessment service and, beside it in the same process, the consent service it gets
    pupils' data keys from (both on the test's topic prefix and database)."""

    app: FastAPI
    client: httpx.AsyncClient
    consent_app: FastAPI
    consent: httpx.AsyncClient


@asynccontextmanager
async def serving_stack(settings: Settings) -> AsyncIterator[Stack]:
    settings = settings.model_copy(update={"consent_url": CONSENT_URL})
    consent_service = consent_app(ConsentServiceSettings(kernel=settings, consent=ConsentSettings(run_retention_scheduler=False)))
    async with consent_service.router.lifespan_context(consent_service):
        transport = httpx.ASGITransport(app=consent_service)
        async with httpx.AsyncClient(transport=transport, base_url=CONSENT_URL, timeout=60) as consent:
            app = assessment_app(settings, consent_http=consent)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://assessment", timeout=60) as client:
                    yield Stack(app, client, consent_service, consent)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with serving_stack(settings) as stack:
        yield stack.app, stack.client


@dataclass
class Tenant:
    """A trust and academy of a test's own, and tokens for its staff."""

    issuer: DevIssuer
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academy_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def headers(self, role: Role = Role.senco, academy_ids: list[uuid.UUID] | None = None, subject: str = "staff-1",
                trust_id: uuid.UUID | None = None, client: str | None = None) -> dict[str, str]:
        academies = [self.academy_id] if academy_ids is None else academy_ids
        if role is Role.service and client is None:
            client = "reporting"  # a service token names its client: the reporting service's by default
        token = self.issuer.issue(subject, [role], trust_id or self.trust_id, academies, client=client)
        return {"Authorization": f"Bearer {token}"}

    async def register(self, client: httpx.AsyncClient, academy_id: uuid.UUID | None = None) -> None:
        response = await client.put(f"/academies/{academy_id or self.academy_id}", json={"name": "Oak Hill Primary"},
                                    headers=self.headers(Role.trust_admin))
        assert response.status_code in (200, 201), response.text


def upn() -> str:
    return "A" + "".join(random.choices("0123456789", k=12))


def pupil_rows(count: int, reg_group: str = "4B", born: date = date(2017, 4, 3)) -> list[str]:
    return [f"{upn()},Surname{n},Forename{n},{born:%d/%m/%Y},{'MF'[n % 2]},4,{reg_group}" for n in range(count)]


def roster_csv(rows: list[str], header: str = HEADER) -> bytes:
    return ("\r\n".join([header, *rows]) + "\r\n").encode()


async def import_roster(client: httpx.AsyncClient, tenant: Tenant, data: bytes, **params: Any) -> httpx.Response:
    return await client.post(f"/academies/{tenant.academy_id}/roster-imports", content=data, params=params,
                             headers={**tenant.headers(), "Content-Type": "text/csv"})


async def class_of(client: httpx.AsyncClient, tenant: Tenant, count: int, reg_group: str = "4B",
                   born: date = date(2017, 4, 3)) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Register the tenant's academy and import a class; returns the class id and pupil ids."""
    await tenant.register(client)
    response = await import_roster(client, tenant, roster_csv(pupil_rows(count, reg_group, born)))
    assert response.status_code == 200, response.text
    pupils = [uuid.UUID(p["pupil_id"]) for p in response.json()["enrolled"]]
    classes = (await client.get(f"/academies/{tenant.academy_id}/classes", headers=tenant.headers())).json()["items"]
    class_id = next(uuid.UUID(c["class_id"]) for c in classes if c["name"] == reg_group)
    return class_id, pupils


def now() -> str:
    return datetime.now(UTC).isoformat()


async def events_of(engine: AsyncEngine, trust_id: uuid.UUID,
                    api: httpx.AsyncClient | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """The tenant's events in the assessment store: (stream, type, data) — the data as stored (its
    personal fields sealed), or opened with the service's keyring when `api` (its client) is given."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT event_id, stream_id, event_type, data FROM assessment.events WHERE trust_id = :t "
                 "ORDER BY global_position"),
            {"t": trust_id},
        )).all()
    if api is None:
        return [(r.stream_id, r.event_type, r.data) for r in rows]
    sealing = api._transport.app.state.runtime.sealing  # type: ignore[attr-defined]  # noqa: SLF001 - the in-process app
    opened = []
    for r in rows:
        event = await open_data(sealing, model_for(r.event_type), r.data, r.event_id, trust_id)
        opened.append((r.stream_id, r.event_type, event.model_dump(mode="json") if event is not None else {}))
    return opened


async def count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql), params))
