"""Where the tests' PostgreSQL and Kafka come from: FLOURISH_TEST_STACK picks one of two stacks.

* ``embedded`` (the default): the local launcher's servers, started if they are not running
  (`ensure_stack`), or the external ones DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS name. Needs no
  Docker; the launcher fetches PostgreSQL and Kafka into the checkout the first time.
* ``containers``: a PostgreSQL 18 and a Kafka 4 (KRaft) container from testcontainers' modules,
  started once for the test session and removed at its end. Needs a Docker engine; without one it
  fails at once, saying so, rather than half-way through the run.

Either way the tests get the same thing: an asyncpg URL for a login role that is not a superuser
(row-level security binds it, as it binds the services), with CREATEDB and CREATEROLE, and a
broker that, like the launcher's (flourish/local/kafka.py), takes SASL/SCRAM-SHA-512 logins (admin
and the four services) and authorises them with the standard authorizer: no ACL, no access; topics
are made by admin (tests/conftest.py provisions each test's topics and ACLs), never on first use.

The containers' broker gets that from `kafka_container_env` (its KAFKA_* environment) and
`scram_format_arguments` (the SCRAM users written into its metadata when testcontainers' start
script formats its storage), with passwords made for the run and written, owner-only, into a
credentials directory of the run's own (`StackForTests.kafka_settings`). NOT RUN HERE: no machine
this project is built on has a Docker engine; what is checked is the configuration these pure
functions build (tests/unit/test_stack_selection.py), not a broker started from it.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from flourish.local import InfraError, progress, run_sync
from flourish.local.stack import StackEndpoints, ensure_stack
from shared.messaging.clients import ADMIN, IDENTITIES, SCRAM_MECHANISM
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
    # Topics are made by admin (the tests' fixtures), never by a client that happens to name one.
    "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
    "KAFKA_MIN_INSYNC_REPLICAS": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
}

# testcontainers' KafkaContainer: the tests connect to its mapped port (`port`, 9093) on the
# listener named `listener_name`; BROKER (9092, advertised on the container's own address) is the
# inter-broker listener, CONTROLLER (9094) the KRaft controller's. Our client listener is CLIENT,
# not testcontainers' PLAINTEXT, and no listener is named SASL_*: Confluent's configure script
# demands a JAAS file in KAFKA_OPTS when an advertised listener's name starts with SASL_.
CLIENT_LISTENER = "CLIENT"
# The broker's login to its own BROKER and CONTROLLER listeners: SASL/PLAIN with one static user
# (KRaft's controller cannot use SCRAM, whose credentials live in the metadata it serves), as the
# launcher's broker does. Neither port is published on the host.
CONTROLLER = "controller"
# Where testcontainers' KRaft start script formats the storage (its boot command appends
# `kafka-storage format ... -c /etc/kafka/kafka.properties` to Confluent's configure script);
# the SCRAM users are added to that very command.
FORMAT_COMMAND_TAIL = "-c /etc/kafka/kafka.properties"


def kafka_passwords() -> dict[str, str]:
    """A fresh password per Kafka identity (admin, the four services) and for the broker's own
    `controller` login, for one run. Hex: nothing a shell, JAAS or `--add-scram` would read."""
    return {identity: secrets.token_hex(24) for identity in (*IDENTITIES, CONTROLLER)}


def property_env(name: str) -> str:
    """The Confluent image's environment variable for a broker property: KAFKA_ + upper case, '.'
    as '_', '_' as '__', '-' as '___' (the image's `env_to_props` reverses this)."""
    escaped = {".": "_", "_": "__", "-": "___"}
    return "KAFKA_" + "".join(escaped.get(char, char) for char in name).upper()


def kafka_container_env(passwords: Mapping[str, str]) -> dict[str, str]:
    """The KAFKA_* environment, beyond testcontainers' own, that makes the container's broker take
    logins and enforce ACLs like the launcher's: CLIENT (the mapped port) SASL_PLAINTEXT with
    SCRAM-SHA-512; BROKER and CONTROLLER SASL_PLAINTEXT with PLAIN and the static `controller`
    user; the standard authorizer, no ACL no access, admin and controller the only super users.
    testcontainers sets KAFKA_LISTENERS and the advertised listeners; the protocol map is set
    through the container's `security_protocol_map` (see `_kafka_container`)."""
    admin, controller = passwords[ADMIN], passwords[CONTROLLER]
    plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
             f'username="{CONTROLLER}" password="{controller}" user_{CONTROLLER}="{controller}";')
    client = CLIENT_LISTENER.lower()
    properties = {
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.{client}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.{client}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config":
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin}";',
        "listener.name.broker.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.broker.plain.sasl.jaas.config": plain,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN};User:{CONTROLLER}",
    }
    return {**KAFKA_SETTINGS, **{property_env(name): value for name, value in properties.items()}}


def kafka_security_protocol_map() -> str:
    """Every listener of the container's broker requires a login (testcontainers' default map
    has BROKER:PLAINTEXT; its KRaft set-up appends CONTROLLER:PLAINTEXT, which we replace)."""
    return f"BROKER:SASL_PLAINTEXT,{CLIENT_LISTENER}:SASL_PLAINTEXT"


def scram_format_arguments(passwords: Mapping[str, str]) -> str:
    """`kafka-storage format` arguments creating each identity's SCRAM-SHA-512 user with the
    storage (Kafka >= 3.5): the broker answers SCRAM logins from its first start."""
    return " ".join(f'--add-scram "{SCRAM_MECHANISM}=[name={identity},password={passwords[identity]}]"'
                    for identity in IDENTITIES)


def with_scram_users(boot_command: str, passwords: Mapping[str, str]) -> str:
    """testcontainers' KRaft boot command with the SCRAM users added to its format command.
    Raises if the command is not where this expects it (a testcontainers release that changed it)."""
    if boot_command.count(FORMAT_COMMAND_TAIL) != 1 or "kafka-storage format" not in boot_command:
        raise StackSelectionError("testcontainers' KafkaContainer no longer formats its storage as expected; "
                                  "the containers' broker cannot get its SCRAM users")
    return boot_command.replace(FORMAT_COMMAND_TAIL, f"{FORMAT_COMMAND_TAIL} {scram_format_arguments(passwords)}")


def write_credentials(directory: Path, passwords: Mapping[str, str]) -> None:
    """Each identity's password as Settings.kafka_credentials_dir expects it (owner-only files)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for identity in IDENTITIES:
        path = directory / identity
        path.touch(mode=0o600)
        path.write_text(passwords[identity] + "\n")


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
    # Where the broker's passwords are (one file per identity) and the SASL mechanism; None for
    # the embedded stack, whose settings find the launcher's own (state_dir/kafka/credentials).
    kafka_credentials_dir: Path | None = None
    kafka_sasl_mechanism: str | None = None

    def kafka_settings(self) -> dict[str, Any]:
        """Settings fields (keyword arguments of Settings) this stack's broker needs its clients
        to carry: none for the embedded stack; the credentials directory and mechanism for the
        containers'."""
        fields: dict[str, Any] = {}
        if self.kafka_credentials_dir is not None:
            fields["kafka_credentials_dir"] = self.kafka_credentials_dir
        if self.kafka_sasl_mechanism is not None:
            fields["kafka_sasl_mechanism"] = self.kafka_sasl_mechanism
        return fields


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
    passwords = kafka_passwords()
    with ExitStack() as started:
        credentials_dir = Path(started.enter_context(tempfile.TemporaryDirectory(prefix="flourish-kafka-"))) / "credentials"
        write_credentials(credentials_dir, passwords)
        progress("testcontainers", f"starting {POSTGRES_IMAGE} and {KAFKA_IMAGE}")
        postgres = _started(started, _postgres_container())
        kafka = _started(started, _kafka_container(passwords), timeout=KAFKA_READY_TIMEOUT_S)
        superuser_url = postgres.get_connection_url()
        run_sync(lambda: _bootstrap_role(superuser_url))
        database_url = make_url(superuser_url).set(username=ROLE, password=PASSWORD, database=DATABASE)
        yield StackForTests(
            StackKind.CONTAINERS,
            StackEndpoints(database_url.render_as_string(hide_password=False), kafka.get_bootstrap_server()),
            superuser_url=superuser_url,
            kafka_credentials_dir=credentials_dir,
            kafka_sasl_mechanism=SCRAM_MECHANISM,
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


def _kafka_container(passwords: Mapping[str, str]) -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        from testcontainers.kafka import KafkaContainer

    class LoginKafkaContainer(KafkaContainer):  # type: ignore[misc]  # testcontainers is untyped here
        """KafkaContainer whose KRaft set-up requires logins on every listener and whose storage
        format creates the SCRAM users."""

        def _configure_kraft(self) -> None:
            super()._configure_kraft()
            # testcontainers appends CONTROLLER:PLAINTEXT to the map: the controller takes PLAIN logins.
            self.with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", f"{self.security_protocol_map},CONTROLLER:SASL_PLAINTEXT")
            self.boot_command = with_scram_users(self.boot_command, passwords)

    # The mapped port's listener is CLIENT (SASL_PLAINTEXT); readiness is testcontainers' log line
    # ("Kafka Server started"), which needs no connection, and get_bootstrap_server() still names
    # the mapped port, now a SASL one.
    container = LoginKafkaContainer(KAFKA_IMAGE, listener_name=CLIENT_LISTENER, security_protocol="SASL_PLAINTEXT")
    container.security_protocol_map = kafka_security_protocol_map()
    container.with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", container.security_protocol_map)
    container.with_kraft()
    for name, value in kafka_container_env(passwords).items():
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
