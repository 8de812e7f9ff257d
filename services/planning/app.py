"""The planning service: suggested targets and activities, action plans issued by practitioners,
reviews and the session log. Publishes PlanIssued, PlanReviewed, SessionLogged and PlanClosed.

`app()` is the one factory (uvicorn's `--factory services.planning.app:app`, and every test);
`bootstrap` builds what the routes use once, when the service starts: the framework source (the
assessment service over HTTP, cached in planning's own table), the keyring of pupils' data keys
(the consent service over HTTP: session notes and the personal fields of planning's events are
sealed with them) and the handlers' dependencies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import Field

from services.planning import errors_to_problems
from services.planning.api import router
from services.planning.consumers import CONSENT, SCORES
from services.planning.framework_source import AssessmentFrameworks, CachedFrameworks, FrameworkSource
from services.planning.handlers import PlanningDeps, utcnow
from services.planning.notes import SessionNotes, seal_clear_notes
from services.planning.subject_access import router as subject_access_router
from services.planning.tables import kernel, metadata
from shared.datakeys import DataKeyClient, DataKeySettings
from shared.peers import ServiceTokens
from shared.service import Bootstrap, Runtime, ServiceSpec, create_app
from shared.settings import ServiceSettings, Settings

SPEC = ServiceSpec(
    name="planning",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Suggested targets and activities, action plans issued by practitioners, reviews and the session "
                "log: publishes PlanIssued, PlanReviewed, SessionLogged and PlanClosed.",
    routers=[router, subject_access_router],
    consumers=[SCORES, CONSENT],
    problems=errors_to_problems.PROBLEMS,
    keyring=lambda runtime, planning: planning.keyring,
    on_startup=[lambda runtime, planning: _seal_clear_notes(runtime, planning)],
)


async def _seal_clear_notes(runtime: Runtime, planning: Planning) -> None:
    """Notes written before they were sealed (revision seal_0004) are sealed before traffic."""
    await seal_clear_notes(runtime.engine, planning.handlers.notes)


class PlanningServiceSettings(ServiceSettings):
    """Planning's settings tree: the kernel's `Settings` and the data keys' cache (FLOURISH_DATA_KEY_CACHE_*)."""

    data_keys: DataKeySettings = Field(default_factory=DataKeySettings)


@dataclass(frozen=True)
class Planning:
    """What planning's routes use, built once by `bootstrap`."""

    settings: PlanningServiceSettings
    handlers: PlanningDeps
    keyring: DataKeyClient


def bootstrap(settings: PlanningServiceSettings, *, frameworks: FrameworkSource | None = None,
              assessment_http: httpx.AsyncClient | None = None, consent_http: httpx.AsyncClient | None = None,
              clock: Callable[[], datetime] = utcnow) -> Bootstrap:
    """Framework content comes from the assessment service over HTTP (`assessment_http`: a client
    for it, e.g. on an in-process ASGI transport in tests; by default one of planning's own); data
    keys from the consent service (`consent_http`, likewise)."""
    kernel_settings = settings.kernel
    # In production FLOURISH_CONSENT_URL must be https (or FLOURISH_MESH_MTLS=true): data keys travel
    # on it. The start-up validation checks it with every other peer (shared/production.py).

    @asynccontextmanager
    async def build(runtime: Runtime) -> AsyncIterator[Planning]:
        http = assessment_http or httpx.AsyncClient(timeout=10.0)
        tokens = ServiceTokens(kernel_settings, "planning")
        keyring = DataKeyClient(kernel_settings.consent_url, tokens.for_trust,
                                ttl_s=settings.data_keys.data_key_cache_ttl_s,
                                max_entries=settings.data_keys.data_key_cache_size, http=consent_http)
        try:
            source = frameworks or CachedFrameworks(runtime.engine, AssessmentFrameworks(
                kernel_settings.assessment_url, tokens, http))
            yield Planning(settings, PlanningDeps(store=runtime.store, frameworks=source, notes=SessionNotes(keyring),
                                                  clock=clock), keyring)
        finally:
            await keyring.aclose()
            if http is not assessment_http:
                await http.aclose()

    return build


def app(settings: PlanningServiceSettings | Settings | None = None, *, frameworks: FrameworkSource | None = None,
        assessment_http: httpx.AsyncClient | None = None, consent_http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The planning service (uvicorn's factory: `uvicorn --factory services.planning.app:app`).

    `settings`: the settings tree, or the kernel's `Settings` alone; the rest are for tests."""
    tree = PlanningServiceSettings.of(settings)
    spec = replace(SPEC, bootstrap=bootstrap(tree, frameworks=frameworks, assessment_http=assessment_http,
                                         consent_http=consent_http, clock=clock))
    return create_app(spec, tree.kernel)
