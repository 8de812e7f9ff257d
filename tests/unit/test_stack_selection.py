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
    def no_container() -> None:
        raise AssertionError("no container may be attempted without an engine")

    monkeypatch.setattr(selection, "_postgres_container", no_container)
    monkeypatch.setattr(selection, "_kafka_container", no_container)
    started = time.monotonic()

    with pytest.raises(StackSelectionError) as refused, stack_for_tests({"FLOURISH_TEST_STACK": "containers"}):
        pass

    assert time.monotonic() - started < 10
    assert "needs a Docker engine" in str(refused.value)
    assert "FLOURISH_TEST_STACK=embedded" in str(refused.value)


def test_the_containers_are_postgresql_18_with_asyncpg_and_kafka_4_in_kraft_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    import testcontainers.core.container

    class NoClient:  # building a container object talks to no engine; only starting it would
        def __init__(self, **kwargs: object) -> None:
            pass

    monkeypatch.setattr(testcontainers.core.container, "DockerClient", NoClient)

    # The container builders are private to the launcher; this test pins what they build.
    postgres = selection._postgres_container()  # noqa: SLF001 - the launcher's own builder, checked without starting it
    kafka = selection._kafka_container()  # noqa: SLF001 - as above

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
