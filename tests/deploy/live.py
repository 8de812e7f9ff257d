"""The four services started for real, as the image runs them, for a live /metrics scrape.

The services are installed the way the Dockerfile installs them (only what .dockerignore admits,
built into a wheel, installed without the source tree) and run with `uvicorn --factory`, each
against a database of its own on the project's PostgreSQL and a topic prefix of its own on its
Kafka. Then they are made to do what records every metric the kernel has: HTTP requests (2xx,
4xx), an event through the outbox relay, an event too large for Kafka (a publish failure), and an
undecodable record for every consumer group a service declares (a dead letter, lag)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from flourish.kafka_acls import deprovision, provision
from flourish.local.postgres import drop_database
from flourish.local.services import SERVICES
from shared.messaging.topics import topics_of
from shared.settings import Settings
from tests.deploy.manifests import ROOT

READY_TIMEOUT_S = 120.0
METRICS_TIMEOUT_S = 90.0


def install_like_the_image(work: Path) -> Path:
    """What the Dockerfile's build stage does: the admitted files, a wheel, installed without deps
    (the test's virtualenv has them). Returns the folder to put first on PYTHONPATH."""
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("shared", "services", "flourish"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    # No build isolation: the build backend comes from the test virtualenv (make install puts it
    # there), so building needs no package index.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "wheel"), str(source)],
                   check=True, timeout=300)
    wheel = next((work / "wheel").glob("flourish-*.whl"))
    target = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveService:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@dataclass
class LivePlatform:
    services: dict[str, LiveService]
    database_url: str
    topic_prefix: str
    site: Path

    async def scrape(self, name: str) -> str:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{self.services[name].url}/metrics")
            response.raise_for_status()
            return response.text


async def _create_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def _spawn(name: str, environment: dict[str, str], folder: Path) -> LiveService:
    port = free_port()
    log = folder / f"{name}.log"
    command = [sys.executable, "-m", "uvicorn", "--factory", f"services.{name}.app:app",
               "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=folder, env=environment, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return LiveService(name, port, process, log)


async def _wait_ready(service: LiveService) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited during start-up:\n{service.log_tail()}")
            try:
                if (await client.get(f"{service.url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{service.name} was not ready after {READY_TIMEOUT_S:.0f}s:\n{service.log_tail()}")


def _stop(service: LiveService) -> None:
    if service.process.poll() is None:
        service.process.terminate()  # this process only, by its own handle
        try:
            service.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(timeout=5)


@asynccontextmanager
async def live_platform(stack: Settings, work: Path) -> AsyncIterator[LivePlatform]:
    site = install_like_the_image(work)
    suffix = uuid.uuid4().hex[:10]
    database = f"deploy_metrics_{suffix}"
    admin_url = stack.sync_database_url
    database_url = stack.database_url.rsplit("/", 1)[0] + f"/{database}"
    prefix = f"deploytest.{suffix}."
    await _create_database(admin_url, database)
    await provision(stack, prefix)  # as Kafka's admin, as `flourish infra up` and Strimzi do
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FLOURISH_", "DATABASE_URL", "KAFKA_"))},
        "PYTHONPATH": str(site),  # the installed wheel, never the checkout
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers,
        "FLOURISH_TOPIC_PREFIX": prefix,
        "FLOURISH_STATE_DIR": str(work / "state"),
        # Each service logs in to Kafka as itself, with the local broker's password for it.
        "FLOURISH_KAFKA_CREDENTIALS_DIR": str(stack.kafka_credentials_dir),
        "FLOURISH_ROLE": "all",
        "FLOURISH_LOG_LEVEL": "WARNING",
        # A local platform on the dev issuer and dev secrets (production is the default).
        "FLOURISH_ENVIRONMENT": "development",
    }
    # Before any service runs: nothing else on the loop waits while this blocks.
    where = subprocess.run([sys.executable, "-c", "import services, shared; print(services.__file__, shared.__file__)"],  # noqa: ASYNC221
                           env=environment, cwd=work, capture_output=True, text=True, check=True).stdout
    assert all(path.startswith(str(site)) for path in where.split()), f"services would be imported from {where}"
    services: dict[str, LiveService] = {}
    try:
        # The migration step, as the image's migration Job runs it: the services only check.
        subprocess.run([sys.executable, "-m", "flourish.cli", "migrate"], env=environment, cwd=work,  # noqa: ASYNC221
                       capture_output=True, text=True, check=True, timeout=180)
        for name in SERVICES:
            services[name] = _spawn(name, environment, work)
        await asyncio.gather(*(_wait_ready(service) for service in services.values()))
        yield LivePlatform(services, database_url, prefix, site)
    finally:
        for service in services.values():
            _stop(service)
        await drop_database(admin_url, database)
        await deprovision(stack, prefix)


# --- Making every metric happen ------------------------------------------------------------------


async def exercise_http(platform: LivePlatform) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for service in platform.services.values():
            for path in ("/healthz", "/readyz", "/openapi.json", "/no/such/route", "/whoami"):
                await client.get(f"{service.url}{path}")


async def exercise_outbox(platform: LivePlatform) -> Callable[[], object]:
    """An event through assessment's relay, then one larger than Kafka accepts (the relay's
    publish fails and is counted; the row is removed afterwards so the relay moves on)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.assessment.tables import kernel as assessment_tables
    from shared.store.event_store import EventStore
    from tests.integration.kernel.helpers import SEALING, observation

    engine = create_async_engine(platform.database_url)
    # Sealed with the tests' own keys, not the platform's: its consumers dead-letter these two
    # synthetic events (SealedFieldUnreadable), which is not what this step looks at.
    store = EventStore(assessment_tables, sealing=SEALING)
    async with engine.begin() as conn:
        await store.append(conn, f"pupil-{uuid.uuid4()}", [observation()])
    oversized = observation(statement_id="x" * 1_100_000)
    # The store refuses such an event at append; this one's guard is lifted on purpose, to put a
    # record the broker will refuse in front of the relay.
    unguarded = EventStore(assessment_tables, max_event_bytes=2_000_000, sealing=SEALING)
    async with engine.begin() as conn:
        await unguarded.append(conn, f"pupil-{uuid.uuid4()}", [oversized])

    async def remove_oversized() -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text(f'DELETE FROM "{assessment_tables.schema}".outbox WHERE global_position = '
                     f'(SELECT global_position FROM "{assessment_tables.schema}".events WHERE event_id = :id)'),
                {"id": oversized.id},
            )
        await engine.dispose()

    return remove_oversized


async def exercise_consumers(platform: LivePlatform, bootstrap: Mapping[str, Any]) -> list[str]:
    """An undecodable record on every topic a declared consumer group reads: each group
    dead-letters it. Returns the services that have consumer groups."""
    import importlib

    producer = AIOKafkaProducer(**bootstrap)
    await producer.start()
    with_consumers = []
    try:
        for name in platform.services:
            spec = importlib.import_module(f"services.{name}.app").SPEC
            if spec.consumers:
                with_consumers.append(name)
            for consumer in spec.consumers:
                for topic in (t for context in consumer.contexts for t in topics_of(context, platform.topic_prefix)):
                    await producer.send_and_wait(topic, b"not a cloudevent", key=b"x")
    finally:
        await producer.stop()
    return with_consumers


async def wait_for(platform: LivePlatform, conditions: dict[str, list[str]], anywhere: set[str]) -> None:
    """Until each service's scrape shows the metrics named for it, and some scrape shows each of
    `anywhere` (or the time is up: the tests then say which are missing). Metrics recorded by
    background work (a scheduler's first pass) appear a moment after start-up."""
    deadline = time.monotonic() + METRICS_TIMEOUT_S
    while time.monotonic() < deadline:
        scrapes = {name: "\n" + await platform.scrape(name) for name in platform.services}
        per_service = all(f"\n{metric}" in scrapes[name] for name, metrics in conditions.items() for metric in metrics)
        everywhere = "".join(scrapes.values())
        if per_service and all(f"\n{metric}" in everywhere for metric in anywhere):
            return
        await asyncio.sleep(0.5)
