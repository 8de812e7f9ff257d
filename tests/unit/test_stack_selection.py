"""FLOURISH_TEST_STACK picks where the tests' PostgreSQL and Kafka come from: embedded by default,
containers on request, anything else refused; containers without a Docker engine fail at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from flourish.local import selection
from flourish.local.selection import StackKind, StackSelectionError, selected_kind, stack_for_tests
from flourish.local.stack import StackEndpoints

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_docker_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Docker client looks for its engine at a socket nobody listens on (as on this machine)."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    monkeypatch.delenv("TC_HOST", raising=False)


@pytest.mark.parametrize("environ", [{}, {"FLOURISH_TEST_STACK": ""}, {"FLOURISH_TEST_STACK": "embedded"}])
def test_the_embedded_stack_is_the_default(environ: dict[str, str]) -> None:
    assert selected_kind(environ) is StackKind.EMBEDDED


@pytest.mark.parametrize("value", ["containers", " Containers "])
def test_containers_are_selected_by_name(value: str) -> None:
    assert selected_kind({"FLOURISH_TEST_STACK": value}) is StackKind.CONTAINERS


def test_an_unknown_stack_is_refused_naming_the_value_and_the_choices() -> None:
    with pytest.raises(StackSelectionError) as refused:
        selected_kind({"FLOURISH_TEST_STACK": "docker"})

    assert "'docker'" in str(refused.value)
    assert "embedded or containers" in str(refused.value)


def test_the_embedded_stack_is_the_launchers(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = StackEndpoints("postgresql+asyncpg://flourish:flourish@127.0.0.1:15432/flourish", "127.0.0.1:19092")
    monkeypatch.setattr(selection, "ensure_stack", lambda settings=None: endpoints)

    with stack_for_tests({}) as stack:
        assert (stack.kind, stack.endpoints, stack.superuser_url) == (StackKind.EMBEDDED, endpoints, None)


def test_containers_without_a_docker_engine_fail_at_once_saying_to_use_embedded(
    no_docker_engine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_container(*args: object) -> None:
        raise AssertionError("no container may be attempted without an engine")

    monkeypatch.setattr(selection, "_postgres_container", no_container)
    monkeypatch.setattr(selection, "_kafka_container", no_container)
    started = time.monotonic()

    with pytest.raises(StackSelectionError) as refused, stack_for_tests({"FLOURISH_TEST_STACK": "containers"}):
        pass

    assert time.monotonic() - started < 10
    assert "needs a Docker engine" in str(refused.value)
    assert "FLOURISH_TEST_STACK=embedded" in str(refused.value)


@pytest.fixture
def no_docker_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a container object talks to no engine; only starting it would."""
    import testcontainers.core.container

    class NoClient:
        def __init__(self, **kwargs: object) -> None:
            pass

    monkeypatch.setattr(testcontainers.core.container, "DockerClient", NoClient)


def test_the_containers_are_postgresql_18_with_asyncpg_and_kafka_4_in_kraft_mode(no_docker_client: None) -> None:
    # The container builders are private to the launcher; this test pins what they build.
    postgres = selection._postgres_container()  # noqa: SLF001 - the launcher's own builder, checked without starting it
    kafka = selection._kafka_container(selection.kafka_passwords())  # noqa: SLF001 - as above

    assert postgres.image == "postgres:18"
    assert postgres.driver == "+asyncpg"
    assert kafka.image.startswith("confluentinc/cp-kafka:8.")  # Confluent Platform 8 is Apache Kafka 4
    assert kafka.kraft_enabled
    assert kafka.env["KAFKA_NUM_PARTITIONS"] == "3"


def test_a_test_run_asking_for_containers_without_an_engine_stops_before_its_first_test(tmp_path: Path) -> None:
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
                   "FLOURISH_TEST_STACK": "containers", "DOCKER_HOST": f"unix://{tmp_path / 'docker.sock'}"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/unit/test_stack_selection.py::test_containers_are_selected_by_name"],
        check=False, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120,
    )

    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "needs a Docker engine" in run.stdout + run.stderr
    assert "passed" not in run.stdout


# --- the containers' broker takes logins like the launcher's (flourish/local/kafka.py) ----------
# Not run against a container here (no Docker engine on the machines this project is built on):
# these tests pin the configuration the container gets.


def _property(env_name: str) -> str:
    """What Confluent's image makes of a KAFKA_* variable: '___' is '-', '__' is '_', '_' is '.'."""
    raw = env_name.removeprefix("KAFKA_").lower()
    return "-".join("_".join(part.replace("_", ".") for part in piece.split("__")) for piece in raw.split("___"))


def _broker_properties(env: dict[str, str]) -> dict[str, str]:
    return {_property(name): value for name, value in env.items() if name.startswith("KAFKA_")}


@pytest.mark.parametrize("name", ["listener.name.client.scram-sha-512.sasl.jaas.config", "super.users",
                                  "allow.everyone.if.no.acl.found", "sasl.mechanism.inter.broker.protocol"])
def test_property_names_survive_the_images_environment_convention(name: str) -> None:
    assert _property(selection.property_env(name)) == name


def test_the_container_broker_requires_logins_on_every_listener_and_authorises_with_acls(no_docker_client: None) -> None:
    passwords = selection.kafka_passwords()
    kafka = selection._kafka_container(passwords)  # noqa: SLF001 - the launcher's own builder, checked without starting it
    kafka.configure()  # what start() does first: testcontainers' KRaft set-up, with ours on top
    properties = _broker_properties(kafka.env)

    protocols = dict(entry.split(":") for entry in properties["listener.security.protocol.map"].split(","))
    assert protocols == {"BROKER": "SASL_PLAINTEXT", "CLIENT": "SASL_PLAINTEXT", "CONTROLLER": "SASL_PLAINTEXT"}
    # The mapped port (what get_bootstrap_server() names) is the CLIENT listener, the one tests use.
    assert kafka.listener_name == "CLIENT"
    assert f"CLIENT://0.0.0.0:{kafka.port}" in properties["listeners"]
    assert properties["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    client_jaas = properties["listener.name.client.scram-sha-512.sasl.jaas.config"]
    assert f'username="admin" password="{passwords["admin"]}"' in client_jaas
    for listener in ("broker", "controller"):
        assert properties[f"listener.name.{listener}.sasl.enabled.mechanisms"] == "PLAIN"
        jaas = properties[f"listener.name.{listener}.plain.sasl.jaas.config"]
        assert f'user_controller="{passwords["controller"]}"' in jaas
    assert properties["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert properties["sasl.mechanism.inter.broker.protocol"] == "PLAIN"
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:admin;User:controller"  # not User:ANONYMOUS: no listener takes one
    assert properties["auto.create.topics.enable"] == "false"
    assert properties["num.partitions"] == "3"
    # Confluent's configure script demands a JAAS file in KAFKA_OPTS for a listener named SASL_*.
    assert not any(name.startswith("SASL_") for name in protocols)


def test_the_container_formats_its_storage_with_a_scram_user_per_identity(no_docker_client: None) -> None:
    passwords = selection.kafka_passwords()
    kafka = selection._kafka_container(passwords)  # noqa: SLF001 - as above
    kafka.configure()

    format_lines = [line for line in kafka.boot_command.splitlines() if "kafka-storage format" in line]
    assert len(format_lines) == 1
    for identity in ("admin", "assessment", "planning", "consent", "reporting"):
        assert f'--add-scram "SCRAM-SHA-512=[name={identity},password={passwords[identity]}]"' in format_lines[0]
    assert "name=controller" not in format_lines[0]  # the controller's login is PLAIN, static
    # The line is echoed, single-quoted, into Confluent's configure script: nothing may end the quote.
    assert format_lines[0].strip().startswith("echo '") and format_lines[0].count("'") == 2
    assert all(password.isalnum() for password in passwords.values())
    assert len(set(passwords.values())) == len(passwords)


def test_a_testcontainers_release_that_formats_otherwise_is_refused() -> None:
    with pytest.raises(StackSelectionError):
        selection.with_scram_users("kafka-storage format -t x --config elsewhere", selection.kafka_passwords())


def test_the_containers_stack_yields_settings_with_the_mechanism_and_a_password_per_identity(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from shared.messaging.clients import IDENTITIES, credentials, kafka_options
    from shared.settings import Settings

    given: dict[str, str] = {}

    class Started:
        def get_connection_url(self) -> str:
            return "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/postgres"

        def get_bootstrap_server(self) -> str:
            return "127.0.0.1:32768"

    def kafka_container(passwords: dict[str, str]) -> Started:
        given.update(passwords)
        return Started()

    monkeypatch.setattr(selection, "require_docker", lambda: None)
    monkeypatch.setattr(selection, "_postgres_container", Started)
    monkeypatch.setattr(selection, "_kafka_container", kafka_container)
    monkeypatch.setattr(selection, "_started", lambda stack, container, **start: container)
    monkeypatch.setattr(selection, "run_sync", lambda call: None)

    with stack_for_tests({"FLOURISH_TEST_STACK": "containers"}) as stack:
        settings = Settings(kafka_bootstrap_servers=stack.endpoints.kafka_bootstrap_servers,
                            state_dir=tmp_path, **stack.kafka_settings())
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
        assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
        assert stack.kafka_credentials_dir is not None
        assert stack.kafka_credentials_dir.stat().st_mode & 0o077 == 0
        for identity in IDENTITIES:
            assert credentials(settings, identity) == (identity, given[identity])
            assert (stack.kafka_credentials_dir / identity).stat().st_mode & 0o077 == 0
        options = kafka_options(settings, "consent")
        assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-512", "consent")
        credentials_dir = stack.kafka_credentials_dir

    assert not credentials_dir.exists()  # the run's passwords go with its containers


def test_the_embedded_stack_adds_no_kafka_settings() -> None:
    endpoints = StackEndpoints("postgresql+asyncpg://flourish:flourish@127.0.0.1:15432/flourish", "127.0.0.1:19092")
    assert selection.StackForTests(StackKind.EMBEDDED, endpoints).kafka_settings() == {}
