"""What the backup and KEK-rotation tests share: a consent service on a database of its own, with
the keyring a test gives it; pg_dump/pg_restore of the consent schema; the `flourish` CLI run as
an operator would, with the environment the services have."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from flourish.cli import app as flourish_cli
from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.consent.app import app as consent_app
from shared.auth import DevIssuer
from shared.datakeys import KekKeyring
from shared.events.envelope import topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher
from shared.messaging.topics import ensure_topics
from shared.settings import Settings
from tests.integration.consent.conftest import Clock, Consent


@asynccontextmanager
async def consent_with(settings: Settings, prefix: str, state_dir: Path, publisher: KafkaPublisher,
                       keyring: KekKeyring | None = None) -> AsyncIterator[Consent]:
    """The consent service started for real (its lifespan: the schema check, the restore check,
    consumers and relay), with `keyring` as its KEKs (None: the settings')."""
    kernel = settings.model_copy(update={
        "topic_prefix": prefix, "state_dir": state_dir, "jwks_path": state_dir / "dev-issuer" / "jwks.json",
    })
    clock = Clock()
    app = consent_app(ConsentServiceSettings(kernel=kernel, consent=ConsentSettings(run_retention_scheduler=False)),
                      kek=keyring, clock=clock)
    await ensure_topics(kafka_options(kernel, ADMIN), [topic_for(c, prefix) for c in ("assessment", "planning")])
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://consent") as client):
        yield Consent(app, client, DevIssuer(kernel), publisher, prefix, kafka_options(kernel, ADMIN), clock)


PARENT = "Marguerite Quillfeather"


async def hold_keys(consent: Consent, *pupils: uuid.UUID) -> dict[uuid.UUID, tuple[str, str]]:
    """Each pupil gets a data key and something sealed with it (a parent's name on a consent
    decision, a date of birth): {pupil: (the key as the data-key route gives it, the decision id)}."""
    held = {}
    for pupil in pupils:
        granted = await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                                            json=consent.consent_body("share_camhs", name=PARENT))
        assert granted.status_code == 201, granted.text
        clock = await consent.client.put(f"/pupils/{pupil}/retention-clock", headers=consent.service,
                                         json={"date_of_birth": "2016-02-29"})
        assert clock.status_code == 200, clock.text
        answer = await consent.client.get(f"/pupils/{pupil}/data-key", headers=consent.service)
        assert answer.status_code == 200, answer.text
        held[pupil] = (answer.json()["key"], granted.json()["decision_id"])
    return held


def libpq(settings: Settings) -> str:
    return make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_tool(name: str) -> str:
    from flourish.local.postgres import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


async def dump_schema(settings: Settings, schema: str, into: Path) -> None:
    """`pg_dump` of one schema, as a backup job would take it (custom format)."""
    # The tables are under row-level security, forced for their owner too: the dump reads them in
    # the system scope (no trust set), which sees every row, rather than refusing.
    await _run([pg_tool("pg_dump"), "--format=custom", "--enable-row-security", f"--schema={schema}",
                f"--file={into}", libpq(settings)])


async def restore_schema(settings: Settings, schema: str, dump: Path) -> None:
    """Restore the schema from the dump, as an operator would after losing it: drop, pg_restore."""
    import asyncpg

    conn = await asyncpg.connect(libpq(settings))
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()
    await _run([pg_tool("pg_restore"), "--exit-on-error", "--enable-row-security", f"--dbname={libpq(settings)}", str(dump)])


async def _run(command: list[str]) -> None:
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{Path(command[0]).name} failed: {done.stderr}"


def cli_env(settings: Settings, prefix: str, state_dir: Path, more: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "FLOURISH_TOPIC_PREFIX": prefix, "FLOURISH_STATE_DIR": str(state_dir),
            "FLOURISH_KAFKA_CREDENTIALS_DIR": str(settings.kafka_credentials_dir), **(more or {})}


async def flourish(*args: str, env: Mapping[str, str]) -> tuple[int, Any]:
    """Run `flourish <args> --json` (in a thread: the command runs its own event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, flourish_cli, [*args, "--json"], env=dict(env))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.stdout
