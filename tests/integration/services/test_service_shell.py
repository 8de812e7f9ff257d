"""The four services built by the shared shell, each started for real (migrations, Kafka,
relay, consumers) against the stack: health, readiness, auth, docs, metrics and errors."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy import text

from services.assessment import app as assessment
from services.consent import app as consent
from services.planning import app as planning
from services.reporting import app as reporting
from shared.auth import DevIssuer, Role
from shared.service import ServiceSpec
from shared.store.migrations import alembic_config

ASSESSMENT, PLANNING, CONSENT, REPORTING = assessment.SPEC, planning.SPEC, consent.SPEC, reporting.SPEC
SPECS = [ASSESSMENT, PLANNING, CONSENT, REPORTING]
FACTORIES = {
    "assessment": assessment.app,
    "planning": planning.app,
    "consent": lambda s: consent.app(consent.ConsentServiceSettings(
        kernel=s, consent=consent.ConsentSettings(run_retention_scheduler=False))),
    "reporting": reporting.app,
}


@asynccontextmanager
async def serving(spec: ServiceSpec, settings) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """The service as its one factory (app.py's `app`) builds it."""
    app: FastAPI = FACTORIES[spec.name](settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


@pytest.fixture
def service_settings(stack_settings, topic_prefix, tmp_path):
    return stack_settings.model_copy(update={
        "topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
    })


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
async def test_a_service_starts_migrates_its_own_schema_and_reports_ready(spec, service_settings, engine):
    async with serving(spec, service_settings) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "service": spec.name}
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["checks"]["database"] == ready["checks"]["kafka"] == "ok"

    async with engine.connect() as conn:
        tables = set(
            (await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": spec.name})).scalars()
        )
        applied = set((await conn.execute(text(f'SELECT version_num FROM "{spec.name}".alembic_version'))).scalars())
    assert {"events", "outbox", "inbox", "alembic_version"} <= tables
    heads = set(ScriptDirectory.from_config(alembic_config(spec.migrations, service_settings)).get_heads())
    assert applied == heads and heads, "every branch of the service's migrations is at its head"


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
async def test_a_service_serves_openapi_asyncapi_and_metrics(spec, service_settings):
    async with serving(spec, service_settings) as client:
        openapi = (await client.get("/openapi.json")).json()
        asyncapi = (await client.get("/asyncapi.json")).json()
        before = _healthz_count((await client.get("/metrics")).text)
        await client.get("/healthz")
        after = _healthz_count((await client.get("/metrics")).text)

    assert openapi["info"]["title"] == f"Flourish {spec.name}" and "/readyz" in openapi["paths"]
    messages = {name.split(":")[0] for name in asyncapi["components"]["messages"]}
    published = {name for name in messages if name.startswith("flourish.")}  # the rest are its consumers
    assert published and all(name.startswith(f"flourish.{spec.name}.") for name in published)
    assert after == before + 1, "the request to /healthz is counted in the scrape"


def _healthz_count(scrape: str) -> float:
    """Requests to /healthz answered 200 so far in this process (Prometheus' registry is process-wide)."""
    found = re.search(r'^flourish_http_request_duration_seconds_count\{[^}]*route="/healthz",status="200"\} (\S+)$', scrape, re.M)
    return float(found.group(1)) if found else 0.0


async def test_requests_without_a_valid_token_get_401_and_a_dev_token_is_accepted(service_settings):
    trust, academy = uuid.uuid4(), uuid.uuid4()
    token = DevIssuer(service_settings).issue("staff-7", [Role.practitioner], trust, [academy])
    async with serving(ASSESSMENT, service_settings) as client:
        missing = await client.get("/whoami")
        forged = await client.get("/whoami", headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
        accepted = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})

    for refused in (missing, forged):
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert accepted.json() == {
        "subject": "staff-7", "roles": ["practitioner"], "trust_id": str(trust),
        "academy_ids": [str(academy)], "trust_wide": False, "client": None,
    }


async def test_an_unknown_route_is_problem_json(service_settings):
    async with serving(PLANNING, service_settings) as client:
        response = await client.get("/no/such/thing")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


async def test_the_bootstrap_builds_dependencies_once_hands_them_to_routes_and_tasks_and_closes_them(service_settings):
    from dataclasses import replace

    from fastapi import APIRouter, Depends

    from shared.service import create_app, dependencies_of
    from tests.integration.kernel.helpers import MemoryKeyring

    lifecycle: list[str] = []
    handed_to_task: list[object] = []

    @asynccontextmanager
    async def bootstrap(runtime):  # type: ignore[no-untyped-def]
        lifecycle.append("built")
        yield {"answer": 42}
        lifecycle.append("closed")

    async def task(runtime, deps, stop):  # type: ignore[no-untyped-def]
        handed_to_task.append(deps)
        await stop.wait()

    router = APIRouter()

    @router.get("/test/dependencies")
    async def read(deps: dict = Depends(dependencies_of)) -> dict:  # type: ignore[type-arg]
        return deps

    spec = replace(PLANNING, routers=[router], consumers=[], bootstrap=bootstrap, background_tasks=[task],
                   keyring=lambda runtime, deps: MemoryKeyring(), on_startup=[])
    app = create_app(spec, service_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        assert (await client.get("/test/dependencies")).status_code == 503  # not running yet
        async with app.router.lifespan_context(app):
            assert (await client.get("/test/dependencies")).json() == {"answer": 42}
            assert lifecycle == ["built"] and handed_to_task == [{"answer": 42}]
        assert lifecycle == ["built", "closed"]
        assert (await client.get("/test/dependencies")).status_code == 503
