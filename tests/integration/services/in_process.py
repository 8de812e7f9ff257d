"""The four services in the test's own process, wired to each other as in production but over
ASGI transports (assessment asks consent for data keys, planning and reporting ask assessment,
reporting asks consent for sharing decisions), each started through its real `app()` factory and
lifespan on the test's settings. Tests that drive the whole platform through its public APIs
without separate processes share this one wiring."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from services.assessment.app import app as assessment_app
from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.consent.app import app as consent_app
from services.planning.app import app as planning_app
from services.reporting.app import ReportingServiceSettings
from services.reporting.app import app as reporting_app
from services.reporting.sharing import SharingSettings
from shared.settings import Settings
from shared.store.db import create_engine

SUBJECT_ACCESS_PEERS = ("assessment", "planning", "reporting")


@dataclass(frozen=True)
class FourServices:
    apps: dict[str, FastAPI]
    clients: dict[str, httpx.AsyncClient]


def settings_for(stack_settings: Settings, topic_prefix: str, state_dir: Path) -> Settings:
    """The run's servers, with the test's topics, state folder and dev issuer."""
    return stack_settings.model_copy(update={
        "topic_prefix": topic_prefix, "state_dir": state_dir, "jwks_path": state_dir / "dev-issuer" / "jwks.json",
        "consent_url": "http://consent", "relay_poll_interval_s": 0.1,
    })


async def forget_earlier_tests_outboxes(settings: Settings) -> None:
    """The run's database is every test's: an earlier test whose services stopped before their
    relays had published everything leaves rows in a schema's outbox, sealed with that test's own
    keyring (its own dev KEK). This platform's relays would publish them onto this test's topics, and
    its consent service, which cannot unwrap another platform's keys, would (rightly) hold its
    consumer back until they open, as it does for a key service that is away. Not this test's
    events: gone before it starts (as the owner, who may)."""
    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            for schema in ("assessment", "planning", "consent", "reporting"):
                await conn.execute(text(f'DELETE FROM "{schema}".outbox'))
    finally:
        await engine.dispose()


async def four_services(stack: AsyncExitStack, settings: Settings, sharing: SharingSettings) -> FourServices:
    """Start the four services (stopped when `stack` closes); the retention scheduler is off, so a
    test runs retention when it means to."""
    apps: dict[str, FastAPI] = {}
    clients: dict[str, httpx.AsyncClient] = {}
    await forget_earlier_tests_outboxes(settings)

    async def serve(name: str, app: FastAPI) -> httpx.AsyncClient:
        await stack.enter_async_context(app.router.lifespan_context(app))
        apps[name] = app
        clients[name] = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{name}", timeout=60))
        return clients[name]

    # The subject-access export gathers the other three's parts: their transports are filled in
    # as they start (consent holds the mapping, and asks only once a request comes).
    peers: dict[str, httpx.AsyncBaseTransport] = {}
    consent = await serve("consent", consent_app(ConsentServiceSettings(
        kernel=settings, consent=ConsentSettings(run_retention_scheduler=False,
                                                 subject_access_peers={n: f"http://{n}" for n in SUBJECT_ACCESS_PEERS})),
        subject_access_transports=peers))
    assessment = await serve("assessment", assessment_app(settings, consent_http=consent))
    await serve("planning", planning_app(settings, assessment_http=assessment, consent_http=consent))
    await serve("reporting", reporting_app(ReportingServiceSettings(kernel=settings, sharing=sharing),
                                           assessment_http=assessment,
                                           consent_transport=httpx.ASGITransport(app=apps["consent"])))
    peers.update({name: httpx.ASGITransport(app=apps[name]) for name in SUBJECT_ACCESS_PEERS})
    return FourServices(apps, clients)


async def on_a_port(stack: AsyncExitStack, app: FastAPI) -> str:
    """Serve an app already started in process on a real socket too (its lifespan is not run
    again), for a process of the test's own to reach: e.g. an operator's command asking consent
    for data keys. Its URL; the server stops when `stack` closes."""
    import asyncio

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning",
                                           access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # start-up failed: raise why
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        await task

    stack.push_async_callback(stop)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"
