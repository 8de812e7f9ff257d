"""One real stack for the whole run: the Kafka broker and PostgreSQL server the project starts
itself (or those DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS name), or with FLOURISH_TEST_STACK=containers
a PostgreSQL and a Kafka container from testcontainers (flourish/local/selection.py). Each test gets
its own schema and its own topics, so tests never see each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import URL, MetaData, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher
from shared.settings import Settings
from shared.store.db import create_engine
from shared.store.tables import KernelTables, kernel_tables

if TYPE_CHECKING:
    from flourish.local.selection import StackForTests

# The tests run the local stack with the dev issuer and dev secrets: development, as `make test`'s
# `flourish infra up` marks the checkout; FLOURISH_ENVIRONMENT, when set, wins. Stacks of a test's
# own (a state_dir of their own, unmarked) and the processes tests spawn inherit it. The tests of
# production's refusals ask for production explicitly.
os.environ.setdefault("FLOURISH_ENVIRONMENT", "development")

# Spans from every test land here, so a test can follow a trace across a Kafka hop; metrics go
# both to Prometheus' registry (what /metrics serves) and to a reader tests can inspect.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)
METRICS = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader(), METRICS]))


def pytest_sessionstart(session: pytest.Session) -> None:
    """A FLOURISH_TEST_STACK this machine cannot honour stops the run before the first test."""
    from flourish.local import selection

    try:
        selection.check_selection()
    except selection.StackSelectionError as error:
        pytest.exit(str(error), returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The browser tests run last. Playwright's sync API drives its own event loop in the main
    thread while a browser is open, and pytest-asyncio cannot run a test's loop beside it: an
    asynchronous test after them would fail with "Runner.run() cannot be called from a running
    event loop". (Their `browser` fixture also closes the browser after each module.)"""
    browser = Path(__file__).parent / "browser"
    items.sort(key=lambda item: Path(str(item.path)).is_relative_to(browser))


@pytest.fixture(scope="session")
def stack_for_tests() -> Iterator[StackForTests]:
    """The servers FLOURISH_TEST_STACK selects (embedded unless it says containers), up for the
    whole session; containers are removed at its end."""
    from flourish.local import selection

    with selection.stack_for_tests() as stack:
        yield stack


@pytest.fixture(scope="session")
def stack_settings(stack_for_tests: StackForTests) -> Iterator[Settings]:
    """The stack, with a database of this test run's own, migrated: services' schemas are fixed
    names, and a platform started with `make up` on the same server must neither see nor relay
    test events."""
    from flourish.local import run_sync
    from flourish.local.postgres import drop_database

    endpoints = stack_for_tests.endpoints
    server = make_url(endpoints.database_url)
    database = f"flourish_test_{uuid.uuid4().hex[:8]}"
    run_sync(lambda: _admin(server, f'CREATE DATABASE "{database}"'))
    settings = Settings(
        database_url=server.set(database=database).render_as_string(hide_password=False),
        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
        consumer_backoff_base_s=0.01,
        consumer_backoff_max_s=0.05,
        # The containers' broker has logins of its own, made for this run (selection.py).
        **stack_for_tests.kafka_settings(),
    )
    # The migration step, once for the session, as the owner: services built in-process only check
    # their schema is at head when they start (shared/store/migrations.check_at_head).
    from flourish.local.migrate import migrate

    run_sync(lambda: migrate(settings))
    yield settings
    run_sync(lambda: drop_database(_dsn(server), database))


@contextmanager
def database_of_its_own(settings: Settings, label: str) -> Iterator[Settings]:
    """The same servers, with a database no other test uses. For platforms that outlive one test:
    their services' relays lead the outbox of every schema they migrate, so on a shared database
    they would publish other tests' events to their own topics."""
    from flourish.local import run_sync
    from flourish.local.postgres import drop_database

    server = make_url(settings.database_url)
    database = f"flourish_{label}_{uuid.uuid4().hex[:8]}"
    run_sync(lambda: _admin(server, f'CREATE DATABASE "{database}"'))
    try:
        yield settings.model_copy(
            update={"database_url": server.set(database=database).render_as_string(hide_password=False)}
        )
    finally:
        run_sync(lambda: drop_database(_dsn(server), database))


def _dsn(server: URL) -> str:
    return server.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(server: URL, statement: str) -> None:
    conn = await asyncpg.connect(_dsn(server))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def engine(stack_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(stack_settings, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def publisher(stack_settings: Settings) -> AsyncIterator[KafkaPublisher]:
    publisher = KafkaPublisher(kafka_options(stack_settings, ADMIN), client_id="flourish-tests")
    await publisher.start()
    yield publisher
    await publisher.stop()


@pytest.fixture
async def kernel(engine: AsyncEngine) -> AsyncIterator[KernelTables]:
    """A fresh schema with the kernel's tables, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    metadata = MetaData(schema=schema)
    tables = kernel_tables(metadata)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    yield tables
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


TEST_PARTITIONS = 2


@pytest.fixture
async def topic_prefix(stack_settings: Settings) -> AsyncIterator[str]:
    """Topics of the test's own, made with the services' ACLs by the admin identity (services
    may not create topics); topics and ACLs removed afterwards so the broker does not collect thousands."""
    from flourish.kafka_acls import deprovision, provision

    prefix = f"test.{uuid.uuid4().hex[:10]}."
    # Two partitions, not the platform's six: still more than one (what a partition-ordered consumer
    # must handle), at a third of what the broker spends making the prefix's 18 topics.
    await provision(stack_settings, prefix, partitions=TEST_PARTITIONS)
    yield prefix
    await deprovision(stack_settings, prefix)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS


def metric_points(name: str) -> list[tuple[dict[str, str], float]]:
    """Every data point of a metric recorded so far in this test run: (attributes, value)."""
    data = METRICS.get_metrics_data()
    points = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend((dict(p.attributes), p.value) for p in metric.data.data_points)
    return points


def metric_value(name: str, **labels: str) -> float:
    """The sum of a counter's (or gauge's) data points whose attributes include `labels`."""
    return sum(value for attributes, value in metric_points(name) if labels.items() <= attributes.items())


class MetricSnapshot:
    """A metric's value when the snapshot was taken. The reader is process-wide: every reading holds
    what earlier tests recorded, so a test asserts on what its own action added, `delta()`."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.before = metric_value(name, **labels)

    def delta(self) -> float:
        return metric_value(self.name, **self.labels) - self.before


def counter(name: str, **labels: str) -> MetricSnapshot:
    """Snapshot a counter before the action: `sent = counter("flourish_x", outcome="ok")`, act,
    `assert sent.delta() == 1`."""
    return MetricSnapshot(name, **labels)
