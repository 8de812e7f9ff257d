"""The assessment service: framework, roster, observations, assessments and scoring; publishes
ObservationRecorded, StrandScored and the roster and assessment events.

The sample framework is loaded at start-up, once the schema is migrated (idempotent).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI

from services.assessment import errors_to_problems, handlers
from services.assessment.api import router
from services.assessment.domain.errors import FrameworkVersionInUse
from services.assessment.framework_store import sample_framework
from services.assessment.tables import kernel, metadata
from shared.service import Runtime, ServiceSpec, create_app
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


def create(settings: Settings | None = None) -> FastAPI:
    return create_app(SPEC, settings)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.assessment.app:app`."""
    return create()
