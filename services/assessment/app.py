"""The assessment service: framework, roster, observations, assessments and scoring; publishes
ObservationRecorded, StrandScored and the roster and assessment events.

The sample framework is loaded at start-up, once the schema is migrated (idempotent). Personal data
is sealed with each pupil's data key from the consent service (privacy.Privacy: one per process,
closed at shutdown); the service consumes PupilErased and RetentionExpired from the consent
context, and a background task tells consent each imported pupil's date of birth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.assessment import errors_to_problems, handlers
from services.assessment.api import router
from services.assessment.domain.errors import FrameworkVersionInUse
from services.assessment.framework_store import sample_framework
from services.assessment.personal_data import PersonalDataRepository
from services.assessment.privacy import AssessmentPrivacySettings, Privacy, RetentionClockDelivery, erasure_handlers
from services.assessment.tables import kernel, metadata, pupils
from shared.service import ConsumerSpec, Runtime, ServiceSpec, create_app
from shared.settings import Settings

log = logging.getLogger(__name__)


async def load_sample(runtime: Runtime) -> None:
    """Idempotent: the same version with the same content is left as it is."""
    context = handlers.Context(store=runtime.store)
    try:
        async with runtime.engine.begin() as conn:
            outcome = await handlers.load_sample_framework(conn, context, sample_framework())
    except FrameworkVersionInUse:
        # The shipped file changed under a version already used: keep the stored one (it is what
        # assessments were scored against) and say so; the fix is a new version in the file.
        log.warning("the sample framework file differs from the used version stored; keeping the stored one")
        return
    log.info("sample framework %s", outcome.value)


SPEC = ServiceSpec(
    name="assessment",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Framework, roster, observations, assessments and scoring: publishes ObservationRecorded and StrandScored.",
    routers=[router],
    domain_errors=errors_to_problems.PROBLEMS,
    on_startup=[load_sample],
)


def create(settings: Settings | None = None, *, consent_http: httpx.AsyncClient | None = None,
           privacy_settings: AssessmentPrivacySettings | None = None) -> FastAPI:
    """The service with its privacy machinery: the keyring and blind index, the erasure consumer
    and the retention-clock delivery. `consent_http` is how the consent service is reached (tests
    pass a client on the consent app's ASGI transport; by default, HTTP to Settings.consent_url)."""
    settings = settings or Settings()
    privacy = Privacy(settings, http=consent_http, privacy_settings=privacy_settings)
    delivery: list[RetentionClockDelivery] = []

    async def retention_clock_delivery(runtime: Runtime, stop: asyncio.Event) -> None:
        await delivery[0].run(stop)

    erasure = ConsumerSpec(name="erasure", contexts=["consent"], handlers=erasure_handlers(privacy.keyring), roster=pupils)
    spec = replace(SPEC, consumers=[*SPEC.consumers, erasure],
                   background_tasks=[*SPEC.background_tasks, retention_clock_delivery])
    app = create_app(spec, settings)
    runtime: Runtime = app.state.runtime
    delivery.append(RetentionClockDelivery(runtime.engine, privacy))
    app.state.privacy = privacy
    app.state.retention_clock = delivery[0]
    app.state.assessment = handlers.Context(
        store=runtime.store, personal_data=PersonalDataRepository(privacy.keyring, privacy.index))

    kernel_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        try:
            async with kernel_lifespan(application):
                yield
        finally:
            await privacy.aclose()

    app.router.lifespan_context = lifespan
    return app


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.assessment.app:app`."""
    return create()
