"""Issue 14 item 1: the services do not migrate. A service refuses to start on a schema the
migration step has not brought to head (and says what to run); on a migrated one it runs connected
as its own role, which owns nothing, and works through its public API."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy import make_url

from flourish.local import run_sync
from flourish.local.migrate import migrations_of
from flourish.local.postgres import ensure_service_logins, service_database_url
from services.assessment import app as assessment
from services.consent import app as consent
from services.planning import app as planning
from services.reporting import app as reporting
from shared.auth import DevIssuer, Role
from shared.settings import PROJECT_ROOT, Settings
from shared.store.migrations import SchemaNotAtHead, alembic_config
from tests.conftest import database_of_its_own

pytestmark = pytest.mark.infra

FACTORIES: dict[str, Callable[[Settings], FastAPI]] = {
    "assessment": assessment.app,
    "planning": planning.app,
    "consent": lambda s: consent.app(consent.ConsentServiceSettings(
        kernel=s, consent=consent.ConsentSettings(run_retention_scheduler=False))),
    "reporting": reporting.app,
}


def _own(settings: Settings, topic_prefix: str, tmp_path: Path) -> Settings:
    return settings.model_copy(update={
        "topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
    })


@pytest.mark.parametrize("service", ["reporting", "assessment"])
async def test_a_service_refuses_to_start_on_an_unmigrated_schema(
    service: str, stack_settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    with database_of_its_own(stack_settings, "unmigrated") as empty:
        app = FACTORIES[service](_own(empty, topic_prefix, tmp_path))
        with pytest.raises(SchemaNotAtHead, match="flourish migrate"):
            async with app.router.lifespan_context(app):
                pass


@pytest.mark.parametrize("service", list(FACTORIES))
async def test_a_service_runs_as_its_own_role(
    service: str, stack_settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    ensure_service_logins(stack_settings, (service,))
    as_role = _own(stack_settings, topic_prefix, tmp_path).model_copy(
        update={"database_url": service_database_url(stack_settings, service)})
    app = FACTORIES[service](as_role)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://s") as client:
        ready = (await client.get("/readyz")).json()
        assert ready["checks"]["database"] == "ok", ready
        if service == "assessment":  # a command: events, outbox, idempotency, read model, as the role
            token = DevIssuer(as_role).issue("admin", [Role.trust_admin], uuid.uuid4(), [uuid.uuid4()])
            named = await client.put("/trust", json={"name": "Role Trust"}, headers={"Authorization": f"Bearer {token}"})
            assert named.status_code < 300, named.text


def test_flourish_migrate_brings_every_schema_to_head_as_the_owner(stack_settings: Settings, tmp_path: Path) -> None:
    with database_of_its_own(stack_settings, "cli_migrate") as empty:
        environment = {**os.environ, "DATABASE_URL": empty.database_url, "FLOURISH_STATE_DIR": str(tmp_path)}
        done = subprocess.run([sys.executable, "-m", "flourish.cli", "migrate"], env=environment, cwd=PROJECT_ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        # Now every service starts on it (they check; they do not migrate).
        for service in FACTORIES:
            heads = ScriptDirectory.from_config(alembic_config(migrations_of(service), empty)).get_heads()
            found = run_sync(lambda s=service: _versions(empty, s))  # type: ignore[misc]
            assert found == set(heads), service


async def _versions(settings: Settings, schema: str) -> set[str]:
    conn = await asyncpg.connect(make_url(settings.database_url).set(drivername="postgresql")
                                 .render_as_string(hide_password=False))
    try:
        return {row[0] for row in await conn.fetch(f'SELECT version_num FROM "{schema}".alembic_version')}
    finally:
        await conn.close()
