"""Fail closed at start, and a dead background task fails liveness.

A trust's IT team that deploys with a setting missing gets a service that refuses to start, naming
what is missing (all of it at once), before it connects to anything; with everything present — the
database reached over TLS with verify-full and the local test CA, as the service's own role — it
starts. A service connecting as its schema's owner is refused. A background task that dies turns
/healthz and /readyz to 503, naming the task, so Kubernetes restarts the pod."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from flourish.local.postgres import service_database_url
from flourish.local.tls import TlsFront, local_tls
from services.assessment import app as assessment
from services.planning import app as planning
from shared.messaging.clients import credentials
from shared.production import ProductionMisconfigured
from shared.service import create_app
from shared.settings import Settings
from tests.conftest import counter
from tests.integration.kernel.helpers import MemoryKeyring


@pytest.fixture
async def front(stack_settings: Settings) -> AsyncIterator[TlsFront]:
    server = make_url(stack_settings.database_url)
    async with TlsFront(local_tls(stack_settings.state_dir), (server.host or "127.0.0.1", server.port or 5432)) as tls:
        yield tls


def over_tls(settings: Settings, database_url: str, front: TlsFront) -> str:
    return make_url(database_url).set(host="localhost", port=front.port).update_query_dict(
        {"sslmode": "verify-full", "sslrootcert": str(local_tls(settings.state_dir).ca_file)}
    ).render_as_string(hide_password=False)


@pytest.fixture
def production(stack_settings: Settings, front: TlsFront, topic_prefix: str, tmp_path: Any) -> Settings:
    """Everything production needs, the database as planning's own role over verified TLS."""
    return stack_settings.model_copy(update={
        "environment": "production", "topic_prefix": topic_prefix, "state_dir": tmp_path,
        "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
        "jwks_url": "https://login.trust.example/.well-known/jwks.json", "token_issuer": "https://login.trust.example",
        "service_client_id": "flourish-planning", "service_client_secret": "a-client-secret",
        "service_token_url": "https://login.trust.example/oauth2/token", "mesh_mtls": True,
        "database_url": over_tls(stack_settings, service_database_url(stack_settings, "planning"), front),
        # Planning's own login to the local broker (in a cluster, its KafkaUser's secret).
        "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_username": "planning",
        "kafka_password": credentials(stack_settings, "planning")[1],
    })


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client):
        yield client


async def test_with_everything_present_a_production_service_starts(production: Settings) -> None:
    async with serving(planning.app(production)) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["tasks"] == "ok"


@pytest.mark.parametrize(("missing", "named"), [
    ({"kafka_password": None}, "FLOURISH_KAFKA_PASSWORD"),
    ({"service_client_secret": None}, "FLOURISH_SERVICE_CLIENT_SECRET"),
    ({"jwks_url": None}, "FLOURISH_JWKS_URL"),
])
async def test_a_production_service_missing_one_setting_refuses_to_start(production: Settings, missing: dict[str, Any],
                                                                        named: str) -> None:
    app = planning.app(production.model_copy(update=missing))
    with pytest.raises(ProductionMisconfigured) as refused:
        async with serving(app):
            pytest.fail("the service started")
    assert len(refused.value.problems) == 1 and named in refused.value.problems[0]


async def test_a_database_url_without_verified_tls_is_refused_before_connecting(production: Settings,
                                                                               stack_settings: Settings) -> None:
    plain = service_database_url(stack_settings, "planning")  # the right role, no TLS
    with pytest.raises(ProductionMisconfigured, match="sslmode=verify-full"):
        async with serving(planning.app(production.model_copy(update={"database_url": plain}))):
            pytest.fail("the service started")


async def test_a_service_connecting_as_its_schemas_owner_is_refused(production: Settings, stack_settings: Settings,
                                                                   front: TlsFront) -> None:
    owner = over_tls(stack_settings, stack_settings.database_url, front)  # the migration role's login
    with pytest.raises(ProductionMisconfigured, match="owner of schema planning"):
        async with serving(planning.app(production.model_copy(update={"database_url": owner}))):
            pytest.fail("the service started")


async def test_a_services_own_secret_is_checked_too(production: Settings, stack_settings: Settings,
                                                    front: TlsFront, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOURISH_LOOKUP_KEY", raising=False)
    settings = production.model_copy(update={
        "database_url": over_tls(stack_settings, service_database_url(stack_settings, "assessment"), front),
        "kafka_username": "assessment", "kafka_password": credentials(stack_settings, "assessment")[1]})
    with pytest.raises(ProductionMisconfigured) as refused:
        async with serving(assessment.app(settings)):
            pytest.fail("the service started")
    assert refused.value.problems == ["FLOURISH_LOOKUP_KEY is missing"]
    monkeypatch.setenv("FLOURISH_LOOKUP_KEY", base64.b64encode(os.urandom(32)).decode())
    async with serving(assessment.app(settings)) as client:
        assert (await client.get("/readyz")).status_code == 200


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_deployment_missing_its_secrets_exits_naming_all_of_them_and_serves_nothing(tmp_path: Any) -> None:
    """As a pod starts: uvicorn with the service's factory, production by default, nothing set."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("FLOURISH_", "DATABASE_URL", "KAFKA_"))}
    environment.update({"FLOURISH_STATE_DIR": str(tmp_path), "PYTHONPATH": os.getcwd()})
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "services.planning.app:app", "--port", str(port)],
        env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode != 0
    for name in ("FLOURISH_JWKS_URL", "FLOURISH_SERVICE_CLIENT_SECRET", "sslmode=verify-full",
                 "FLOURISH_KAFKA_SECURITY_PROTOCOL"):
        assert name in process.stderr, process.stderr[-2000:]
    assert "Application startup complete" not in process.stderr
    assert time.monotonic() - started < 120


# --- A dead background task fails liveness -----------------------------------------------------


async def test_a_background_task_that_dies_fails_liveness_and_readiness(stack_settings: Settings, topic_prefix: str,
                                                                        tmp_path: Any,
                                                                        capfd: pytest.CaptureFixture[str]) -> None:
    async def checkpointer(runtime: Any, deps: Any, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("pupil Ada Lovelace's row broke me")  # a message that must not reach /healthz

    settings = stack_settings.model_copy(update={"topic_prefix": topic_prefix, "state_dir": tmp_path,
                                                  "jwks_path": tmp_path / "dev-issuer" / "jwks.json"})
    spec = replace(planning.SPEC, consumers=[], background_tasks=[checkpointer], on_startup=[],
                   keyring=lambda runtime, deps: MemoryKeyring())
    failures = counter("flourish_background_task_failures", service="planning", task="checkpointer")
    async with serving(create_app(spec, settings)) as client:
        assert (await client.get("/healthz")).status_code == 200
        deadline = time.monotonic() + 2.0
        live = await client.get("/healthz")
        while live.status_code == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            live = await client.get("/healthz")
        ready = await client.get("/readyz")

    assert live.status_code == 503 and live.headers["content-type"] == "application/problem+json"
    assert live.json()["dead_tasks"] == {"checkpointer": "RuntimeError"}
    assert ready.status_code == 503 and ready.json()["checks"]["tasks"] == "dead: checkpointer"
    assert "Ada" not in live.text + ready.text
    assert failures.delta() == 1
    logs = capfd.readouterr().err.splitlines()  # the service's JSON log lines
    logged = [json.loads(line) for line in logs if "ended while the service runs" in line]
    assert logged and logged[0]["msg"] == "background task checkpointer ended while the service runs"
    assert logged[0]["level"] == "ERROR" and logged[0]["error_type"] == "RuntimeError"
    assert not any("Ada" in line for line in logs)


async def test_a_background_task_that_returns_while_the_service_runs_fails_liveness(
        stack_settings: Settings, topic_prefix: str, tmp_path: Any) -> None:
    async def scheduler(runtime: Any, deps: Any, stop: asyncio.Event) -> None:
        return  # ended without being asked to stop

    settings = stack_settings.model_copy(update={"topic_prefix": topic_prefix, "state_dir": tmp_path,
                                                  "jwks_path": tmp_path / "dev-issuer" / "jwks.json"})
    spec = replace(planning.SPEC, consumers=[], background_tasks=[scheduler], on_startup=[],
                   keyring=lambda runtime, deps: MemoryKeyring())
    async with serving(create_app(spec, settings)) as client:
        await asyncio.sleep(0.1)
        live = await client.get("/healthz")
    assert live.status_code == 503 and live.json()["dead_tasks"] == {"scheduler": "returned"}


async def test_a_consumer_whose_loop_ends_fails_liveness(stack_settings: Settings, topic_prefix: str,
                                                         tmp_path: Any) -> None:
    settings = stack_settings.model_copy(update={"topic_prefix": topic_prefix, "state_dir": tmp_path,
                                                  "jwks_path": tmp_path / "dev-issuer" / "jwks.json"})
    app = planning.app(settings)
    async with serving(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        runtime = app.state.runtime
        name, subscriber = runtime.subscribers[0]
        for task in subscriber.tasks:  # the consume loop FastStream runs for the consumer, gone
            task.cancel()
        await asyncio.sleep(0.1)
        live = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert live.status_code == 503 and live.json()["dead_tasks"] == {f"consumer {name}": "stopped"}
    assert ready.status_code == 503
