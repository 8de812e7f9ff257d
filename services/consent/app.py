"""The consent service: the consent ledger, sharing decisions, retention policies and their
scheduler, per-pupil data keys and erasure. Publishes ConsentGranted/Refused/Withdrawn,
LawfulBasisRecorded, RetentionPolicySet, RetentionExpired and PupilErased."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.consent.api import router
from shared.problems import Gone
from services.consent.consumers import ROSTER
from services.consent.decisions import DecisionReader
from services.consent.domain import errors
from services.consent.handlers import ConsentDeps, utcnow
from services.consent.scheduler import RetentionScheduler
from services.consent.tables import data_keys, kernel, metadata
from shared.datakeys import DataKeyDestroyed, DataKeyError, DataKeySettings, DataKeyVault, KeyEncryptionKey, LocalKek
from shared.problems import Conflict, NotFound, Problem, ServiceUnavailable, UnprocessableEntity
from shared.service import Runtime, ServiceSpec, create_app
from shared.settings import Settings


def _unprocessable(error: Exception) -> Problem:
    return UnprocessableEntity(str(error))


DOMAIN_ERRORS: dict[type[Exception], Callable[[Exception], Problem]] = {
    errors.UnknownPupil: lambda e: NotFound(str(e)),
    errors.PupilAlreadyErased: lambda e: Gone(str(e)),
    errors.NothingToWithdraw: lambda e: Conflict(str(e)),
    errors.DecisionInFuture: _unprocessable,
    errors.DecisionOutOfOrder: _unprocessable,
    errors.InvalidValidity: _unprocessable,
    errors.NotASharingPurpose: _unprocessable,
    errors.InvalidRetentionPeriod: _unprocessable,
    DataKeyDestroyed: lambda e: Gone("the pupil was erased and their data key destroyed"),
    # Fail closed: without a key nothing is sealed or read; the client may retry later.
    DataKeyError: lambda e: ServiceUnavailable("the pupil's data key is not available"),
}

SPEC = ServiceSpec(
    name="consent",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="The consent ledger, sharing decisions, retention policies and their scheduler, per-pupil data "
                "keys and erasure: publishes ConsentGranted, ConsentRefused, ConsentWithdrawn, "
                "LawfulBasisRecorded, RetentionPolicySet, RetentionExpired and PupilErased.",
    routers=[router],
    consumers=[ROSTER],
    domain_errors=DOMAIN_ERRORS,
)


class ConsentSettings(BaseSettings):
    """The consent service's own settings (beside the kernel's Settings and DataKeySettings)."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_CONSENT_", extra="ignore")

    # How often the retention scheduler looks for periods that ended (periods are in days).
    retention_interval_s: float = Field(default=900.0, gt=0)
    run_retention_scheduler: bool = True
    # Services whose own /pupils/{id}/subject-access the export gathers: {"assessment": "http://…"}.
    subject_access_peers: dict[str, str] = Field(default_factory=dict)


def build_app(
    settings: Settings | None = None,
    *,
    consent_settings: ConsentSettings | None = None,
    kek: KeyEncryptionKey | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The consent service: the kernel's shell, plus the data-key vault, the sharing decisions'
    read pool and the retention scheduler (a background task: consumers pods and `all` only)."""
    settings = settings or Settings()
    consent_settings = consent_settings or ConsentSettings()
    vault = DataKeyVault(kek or LocalKek.from_settings(
        DataKeySettings(), settings.state_dir, production=settings.environment == "production"
    ), data_keys)
    schedulers: list[RetentionScheduler] = []

    async def retention_scheduler(runtime: Runtime, stop: asyncio.Event) -> None:
        await schedulers[0].run(stop)

    tasks = [retention_scheduler] if consent_settings.run_retention_scheduler else []
    app = create_app(replace(SPEC, background_tasks=[*SPEC.background_tasks, *tasks]), settings)
    runtime = app.state.runtime
    deps = ConsentDeps(store=runtime.store, vault=vault, clock=clock)
    schedulers.append(RetentionScheduler(runtime.engine, deps, interval_s=consent_settings.retention_interval_s))
    app.state.consent = deps
    app.state.retention = schedulers[0]
    app.state.subject_access_peers = dict(consent_settings.subject_access_peers)
    app.state.decisions = decisions = DecisionReader(settings.sync_database_url)

    # The decisions' read pool is needed in every role (the API answers decisions); the shell's
    # background tasks run only where consumers run, so the pool opens and closes with the app.
    kernel_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        async with kernel_lifespan(application):
            if settings.role != "consumers":  # a consumers pod serves no API
                await decisions.start()
            try:
                yield
            finally:
                await decisions.stop()

    app.router.lifespan_context = lifespan
    return app


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.consent.app:app`."""
    return build_app()
