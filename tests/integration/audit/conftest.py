"""Fixtures for the audit ledger on the real server and broker: throw-away ledgers made by the
migration's own statements, a real superuser connection (the stack's: see `superuser`), and
the reporting service running in-process with topics of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from flourish.local.postgres import SUPERUSER, PostgresLayout, is_external
from flourish.local.selection import StackForTests
from services.reporting.audit.checkpoints import checkpoint_chain
from services.reporting.audit.domain.facts import fact_from
from services.reporting.audit.ledger import Ledger
from services.reporting.audit.signing import CheckpointSigner
from services.reporting.audit.tables import create_statements
from shared.auth import DevIssuer, Role
from shared.events.envelope import Envelope
from shared.events.reporting import ReportShared
from shared.settings import Settings

T0 = datetime(2026, 9, 7, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def witness_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every audit test's checkpoint witness (FLOURISH_AUDIT_WITNESS_DIR): a directory of its own,
    never the development witness under the state directory."""
    root = tmp_path_factory.mktemp("witness")
    monkeypatch.setenv("FLOURISH_AUDIT_WITNESS", "dir")
    monkeypatch.setenv("FLOURISH_AUDIT_WITNESS_DIR", str(root))
    # The CLI's Kafka witness and cross-check read topics of this test's own (none, unless it makes them).
    monkeypatch.setenv("FLOURISH_TOPIC_PREFIX", f"test.{uuid.uuid4().hex[:10]}.")
    return root


@pytest.fixture
async def ledger(engine: AsyncEngine) -> AsyncIterator[Ledger]:
    """A ledger of its own, made by the statements migration reporting_0001 runs, as `flourish`."""
    schema = f"audit_{uuid.uuid4().hex[:10]}"
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        for statement in create_statements(schema):
            await conn.execute(text(statement))
    yield Ledger(schema)
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
async def superuser(stack_settings: Settings, stack_for_tests: StackForTests) -> AsyncIterator[asyncpg.Connection]:
    """A real superuser in this test run's database: the container's (FLOURISH_TEST_STACK=containers),
    or the embedded server's bootstrap role over its unix socket."""
    database = make_url(stack_settings.database_url).database
    if stack_for_tests.superuser_url is not None:
        url = make_url(stack_for_tests.superuser_url).set(drivername="postgresql", database=database)
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    else:
        local = Settings()
        if is_external(local):
            pytest.skip("DATABASE_URL names a server whose superuser these tests cannot log in as")
        layout = PostgresLayout.from_settings(local)
        conn = await asyncpg.connect(host=str(layout.socket_dir), port=layout.port, user=SUPERUSER, database=database)
    assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    yield conn
    await conn.close()


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def dsn(stack_settings: Settings) -> str:
    return stack_settings.sync_database_url


def share(trust_id: uuid.UUID, n: int, **changes: Any) -> Envelope:
    """A ReportShared as the reporting service will publish it."""
    data = {
        "share_id": uuid.uuid4(), "pupil_id": uuid.uuid4(), "agency_id": uuid.uuid4(), "agency_category": "camhs",
        "document_kind": "profile", "consent_id": uuid.uuid4(), "shared_by": f"staff-{n % 3}",
        "shared_at": T0 + timedelta(minutes=n),
    }
    data.update(changes)
    return Envelope(data=ReportShared(**data), trust_id=trust_id, academy_id=uuid.uuid4(), source="/flourish/reporting")


async def fill(engine: AsyncEngine, ledger: Ledger, signer: CheckpointSigner, length: int,
               checkpoint_at: tuple[int, ...] = ()) -> uuid.UUID:
    """A fresh trust whose chain has `length` shares, signed at the given entries."""
    trust_id = uuid.uuid4()
    for n in range(1, length + 1):
        async with engine.begin() as conn:
            assert await ledger.append(conn, trust_id, fact_from(share(trust_id, n))) == n
            if n in checkpoint_at:
                await checkpoint_chain(conn, ledger, signer, trust_id)
    return trust_id


# --- The reporting service -------------------------------------------------------------------


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reporting") as client:
            yield client


def bearer(settings: Settings, trust_id: uuid.UUID, *roles: Role, subject: str = "dpo-1",
           academies: tuple[uuid.UUID, ...] = ()) -> dict[str, str]:
    token = DevIssuer(settings).issue(subject, roles, trust_id, academies)
    return {"Authorization": f"Bearer {token}"}
