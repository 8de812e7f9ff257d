"""Where the tests' PostgreSQL and Kafka come from: FLOURISH_TEST_STACK picks one of two stacks.

* ``embedded`` (the default): the local launcher's servers, started if they are not running
  (`ensure_stack`), or the external ones DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS name. Needs no
  Docker; the launcher fetches PostgreSQL and Kafka into the checkout the first time.
* ``containers``: a PostgreSQL 18 and a Kafka 4 (KRaft) container from testcontainers' modules,
  started once for the test session and removed at its end. Needs a Docker engine; without one it
  fails at once, saying so, rather than half-way through the run.

Either way the tests get the same thing: an asyncpg URL for a login role that is not a superuser
(row-level security binds it, as it binds the services), with CREATEDB and CREATEROLE, and a
broker whose topics are created on first use with three partitions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from flourish.local import InfraError, progress, run_sync
from flourish.local.stack import StackEndpoints, ensure_stack
from shared.settings import Settings

STACK_VARIABLE = "FLOURISH_TEST_STACK"

# The versions the platform runs on (compose.yaml: postgres:18, Kafka 4.1). testcontainers'
# KafkaContainer drives Confluent's image (its start script is Confluent's); Confluent Platform
# 8.0 is Apache Kafka 4.0.
POSTGRES_IMAGE = "postgres:18"
KAFKA_IMAGE = "confluentinc/cp-kafka:8.0.0"
# A fresh broker formats its log directory and elects its controller first: on a busy machine
# that takes longer than testcontainers' 30 s.
KAFKA_READY_TIMEOUT_S = 180

# The role the tests and services log in as, as the launcher creates it (flourish/local/postgres.py).
ROLE = DATABASE = PASSWORD = "flourish"
# The container's bootstrap superuser: kept for tests that must act as one (the audit ledger's).
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres"

# What the launcher's broker has that Kafka's defaults do not (flourish/local/kafka.py), as the
# Confluent image's KAFKA_* environment.
KAFKA_SETTINGS = {
    "KAFKA_NUM_PARTITIONS": "3",
    "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "true",
    "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
    "KAFKA_MIN_INSYNC_REPLICAS": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
}


class StackKind(StrEnum):
    EMBEDDED = "embedded"
    CONTAINERS = "containers"


class StackSelectionError(InfraError):
    """FLOURISH_TEST_STACK names no stack, or one this machine cannot run."""


@dataclass(frozen=True)
class StackForTests:
    """The servers a test session uses."""

    kind: StackKind
    endpoints: StackEndpoints
    # A superuser's URL on the same server (containers); None for the embedded stack, whose
    # superuser logs in over the launcher's unix socket instead (flourish.local.postgres).
    superuser_url: str | None = None


def selected_kind(environ: Mapping[str, str] | None = None) -> StackKind:
    """The stack FLOURISH_TEST_STACK names (embedded when unset or empty)."""
    environ = os.environ if environ is None else environ
    value = environ.get(STACK_VARIABLE, "").strip().lower() or StackKind.EMBEDDED.value
    try:
        return StackKind(value)
    except ValueError:
        known = " or ".join(kind.value for kind in StackKind)
        raise StackSelectionError(
            f"{STACK_VARIABLE}={environ[STACK_VARIABLE]!r} names no stack: use {known}"
        ) from None


def check_selection(environ: Mapping[str, str] | None = None) -> StackKind:
    """The selected stack, once this machine is known to be able to run it (before any test)."""
    kind = selected_kind(environ)
    if kind is StackKind.CONTAINERS:
        require_docker()
    return kind


@contextmanager
def stack_for_tests(environ: Mapping[str, str] | None = None, settings: Settings | None = None) -> Iterator[StackForTests]:
    """The selected stack, up until the block ends; containers are removed then, the embedded
    stack stays up (the next run, and `make up`, reuse it)."""
    kind = selected_kind(environ)
    if kind is StackKind.EMBEDDED:
        yield StackForTests(kind, ensure_stack(settings))
        return
    with _containers() as stack:
        yield stack


def require_docker() -> None:
    """Raise unless a Docker engine answers, the way testcontainers will look for one."""
    import docker.errors
    from testcontainers.core.docker_client import DockerClient

    try:
        DockerClient().client.ping()
    except (docker.errors.DockerException, OSError) as error:
        raise StackSelectionError(
            f"{STACK_VARIABLE}=containers needs a Docker engine, and none answers here ({error}). "
            f"Use {STACK_VARIABLE}=embedded (the default): it runs PostgreSQL and Kafka as local processes."
        ) from None


@contextmanager
def _containers() -> Iterator[StackForTests]:
    require_docker()
    with ExitStack() as started:
        progress("testcontainers", f"starting {POSTGRES_IMAGE} and {KAFKA_IMAGE}")
        postgres = _started(started, _postgres_container())
        kafka = _started(started, _kafka_container(), timeout=KAFKA_READY_TIMEOUT_S)
        superuser_url = postgres.get_connection_url()
        run_sync(lambda: _bootstrap_role(superuser_url))
        database_url = make_url(superuser_url).set(username=ROLE, password=PASSWORD, database=DATABASE)
        yield StackForTests(
            StackKind.CONTAINERS,
            StackEndpoints(database_url.render_as_string(hide_password=False), kafka.get_bootstrap_server()),
            superuser_url=superuser_url,
        )


def _started(stack: ExitStack, container: Any, **start: Any) -> Any:
    """Start the container and stop it when the stack closes (even if it failed to get ready)."""
    stack.callback(container.stop)
    container.start(**start)
    return container


def _postgres_container() -> Any:
    # Newer testcontainers releases keep their modules under testcontainers.community (the old
    # path warns there); 4.8, the oldest pyproject allows, has only the old one.
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, username=SUPERUSER, password=SUPERUSER_PASSWORD,
                                  dbname="postgres", driver="asyncpg")
    # As the launcher's server: several services' pools, migrations and tests at once.
    return container.with_command("postgres -c max_connections=200")


def _kafka_container() -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer

    container = KafkaContainer(KAFKA_IMAGE).with_kraft()
    for name, value in KAFKA_SETTINGS.items():
        container.with_env(name, value)
    return container


async def _bootstrap_role(superuser_url: str) -> None:
    """The launcher's role and database, in the container: a login that is not a superuser."""
    url = make_url(superuser_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=30)
    try:
        await conn.execute(f"CREATE ROLE {ROLE} WITH LOGIN CREATEDB CREATEROLE PASSWORD '{PASSWORD}'")
        await conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        await conn.execute(f"GRANT pg_signal_backend TO {ROLE}")  # see flourish.local.postgres
    finally:
        await conn.close()
