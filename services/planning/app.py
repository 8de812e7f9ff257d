"""The planning service: suggested targets and activities, action plans issued by practitioners,
reviews and the session log. Publishes PlanIssued, PlanReviewed, SessionLogged and PlanClosed.

`app()` is the one factory (uvicorn's `--factory services.planning.app:app`, and every test);
`bootstrap` builds what the routes use once, when the service starts: the framework source (the
assessment service over HTTP, cached in planning's own table) and the handlers' dependencies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.planning import errors_to_problems
from services.planning.api import router
from services.planning.consumers import CONSENT, SCORES
from services.planning.framework_source import AssessmentFrameworks, CachedFrameworks, FrameworkSource
from services.planning.handlers import PlanningDeps, utcnow
from services.planning.notes import SessionNotes
from services.planning.subject_access import router as subject_access_router
from services.planning.tables import kernel, metadata
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
)


class PlanningServiceSettings(ServiceSettings):
    """Planning's settings tree: the kernel's `Settings` (planning has no section of its own)."""


@dataclass(frozen=True)
class Planning:
    """What planning's routes use, built once by `bootstrap`."""

    settings: PlanningServiceSettings
    handlers: PlanningDeps


def bootstrap(settings: PlanningServiceSettings, *, frameworks: FrameworkSource | None = None,
              assessment_http: httpx.AsyncClient | None = None, clock: Callable[[], datetime] = utcnow) -> Bootstrap:
    """Framework content comes from the assessment service over HTTP (`assessment_http`: a client
    for it, e.g. on an in-process ASGI transport in tests; by default one of planning's own)."""

    @asynccontextmanager
    async def build(runtime: Runtime) -> AsyncIterator[Planning]:
        http = assessment_http or httpx.AsyncClient(timeout=10.0)
        try:
            source = frameworks or CachedFrameworks(runtime.engine, AssessmentFrameworks(
                settings.kernel.assessment_url, ServiceTokens(settings.kernel, "planning"), http))
            yield Planning(settings, PlanningDeps(store=runtime.store, frameworks=source, notes=SessionNotes(), clock=clock))
        finally:
            if http is not assessment_http:
                await http.aclose()

    return build


def app(settings: PlanningServiceSettings | Settings | None = None, *, frameworks: FrameworkSource | None = None,
        assessment_http: httpx.AsyncClient | None = None, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The planning service (uvicorn's factory: `uvicorn --factory services.planning.app:app`).

    `settings`: the settings tree, or the kernel's `Settings` alone; the rest are for tests."""
    tree = PlanningServiceSettings.of(settings)
    spec = replace(SPEC, bootstrap=bootstrap(tree, frameworks=frameworks, assessment_http=assessment_http, clock=clock))
    return create_app(spec, tree.kernel)
