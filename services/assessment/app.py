"""The assessment service: framework, roster, observations, assessments and scoring; publishes
ObservationRecorded, StrandScored and the roster and assessment events.

`app()` is the one factory (uvicorn's `--factory services.assessment.app:app`, and every test);
`bootstrap` builds what routes, consumers and tasks use once, when the service starts: the privacy
machinery (privacy.Privacy: the keyring of pupils' data keys from the consent service and the UPN
blind index; closed at shutdown) and the handlers' context. The sample framework is loaded at
start-up (idempotent); the service consumes PupilErased and RetentionExpired from the consent
context (and a family's opt-out of the online tool: opt_out.py), and a background task tells
consent each imported pupil's date of birth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import Field

from services.assessment import errors_to_problems, handlers, opt_out
from services.assessment.api import router
from services.assessment.domain.errors import FrameworkVersionInUse
from services.assessment.framework_store import sample_framework
from services.assessment.opt_out import OptOutSettings
from services.assessment.personal_data import PersonalDataRepository
from services.assessment.privacy import AssessmentPrivacySettings, Privacy, RetentionClockDelivery, erasure_handlers
from services.assessment.subject_access import router as subject_access_router
from services.assessment.tables import kernel, metadata, pupils
from shared.datakeys import DataKeySettings
from shared.events.consent import RetentionExpired
from shared.production import key_problems
from shared.service import Bootstrap, ConsumerSpec, Runtime, ServiceSpec, create_app
from shared.settings import ServiceSettings, Settings

log = logging.getLogger(__name__)


class AssessmentServiceSettings(ServiceSettings):
    """Assessment's settings tree: the kernel's, its privacy section (FLOURISH_LOOKUP_KEY…) and the
    data keys' cache (FLOURISH_DATA_KEY_CACHE_*)."""

    privacy: AssessmentPrivacySettings = Field(default_factory=AssessmentPrivacySettings)
    data_keys: DataKeySettings = Field(default_factory=DataKeySettings)
    opt_out: OptOutSettings = Field(default_factory=OptOutSettings)

    def production_problems(self) -> list[str]:
        """The master key of the UPN blind index (never a generated one)."""
        return key_problems("FLOURISH_LOOKUP_KEY", self.privacy.lookup_key)


@dataclass(frozen=True)
class Assessment:
    """What assessment's routes, consumers and tasks use, built once by `bootstrap`."""

    settings: AssessmentServiceSettings
    privacy: Privacy
    context: handlers.Context
    retention_clock: RetentionClockDelivery


def bootstrap(settings: AssessmentServiceSettings, *, consent_http: httpx.AsyncClient | None = None) -> Bootstrap:
    """`consent_http` is how the consent service is reached (tests pass a client on the consent
    app's ASGI transport; by default, HTTP to Settings.consent_url)."""

    @asynccontextmanager
    async def build(runtime: Runtime) -> AsyncIterator[Assessment]:
        privacy = Privacy(settings.kernel, settings.privacy, settings.data_keys, http=consent_http)
        try:
            context = handlers.Context(store=runtime.store,
                                       personal_data=PersonalDataRepository(privacy.keyring, privacy.index))
            yield Assessment(settings, privacy, context, RetentionClockDelivery(runtime.engine, privacy))
        finally:
            await privacy.aclose()

    return build


async def load_sample(runtime: Runtime, assessment: Assessment) -> None:
    """Idempotent: the same version with the same content is left as it is."""
    try:
        async with runtime.engine.begin() as conn:
            outcome = await handlers.load_sample_framework(conn, assessment.context, sample_framework())
    except FrameworkVersionInUse:
        # The shipped file changed under a version already used: keep the stored one (it is what
        # assessments were scored against) and say so; the fix is a new version in the file.
        log.warning("the sample framework file differs from the used version stored; keeping the stored one")
        return
    log.info("sample framework %s", outcome.value)


async def retention_clock_delivery(runtime: Runtime, assessment: Assessment, stop: asyncio.Event) -> None:
    await assessment.retention_clock.run(stop)


def _consent_handlers(assessment: Assessment) -> dict[type, Any]:
    """Erasure and retention (privacy.py), and the family's opt-out of the online tool (opt_out.py)."""
    erasure = erasure_handlers(assessment.privacy.keyring)
    return {**erasure, **opt_out.handlers(assessment.settings.opt_out, erasure[RetentionExpired])}


ERASURE = ConsumerSpec(name="erasure", contexts=["consent"], roster=pupils, handlers_from=_consent_handlers)

SPEC = ServiceSpec(
    name="assessment",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Framework, roster, observations, assessments and scoring: publishes ObservationRecorded and StrandScored.",
    routers=[router, subject_access_router],
    consumers=[ERASURE],
    problems=errors_to_problems.PROBLEMS,
    on_startup=[load_sample],
    background_tasks=[retention_clock_delivery],
    keyring=lambda runtime, assessment: assessment.privacy.keyring,
)


def app(settings: AssessmentServiceSettings | Settings | None = None, *,
        consent_http: httpx.AsyncClient | None = None) -> FastAPI:
    """The assessment service (uvicorn's factory: `uvicorn --factory services.assessment.app:app`).

    `settings`: the settings tree, or the kernel's `Settings` alone; `consent_http` is for tests."""
    tree = AssessmentServiceSettings.of(settings)
    return create_app(replace(SPEC, bootstrap=bootstrap(tree, consent_http=consent_http),
                              production_checks=tree.production_problems), tree.kernel)
