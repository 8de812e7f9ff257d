"""The consent service: the consent ledger, sharing decisions, retention policies and their
scheduler, per-pupil data keys and erasure. Publishes ConsentGranted/Refused/Withdrawn,
LawfulBasisRecorded, RetentionPolicySet, RetentionExpired and PupilErased.

`app()` is the one factory (uvicorn's `--factory services.consent.app:app`, and every test);
`bootstrap` builds what routes and tasks use once, when the service starts: the data-key vault,
the sharing decisions' read pool and the retention scheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.consent import errors_to_problems
from services.consent.api import router
from services.consent.consumers import ROSTER
from services.consent.decisions import DecisionReader
from services.consent.handlers import ConsentDeps, utcnow
from services.consent.scheduler import RetentionScheduler
from services.consent.tables import data_keys, kernel, metadata
from shared.datakeys import DataKeySettings, DataKeyVault, KeyEncryptionKey, LocalKek, VaultKeyring
from shared.service import Bootstrap, Runtime, ServiceSpec, create_app
from shared.settings import ServiceSettings, Settings


class ConsentSettings(BaseSettings):
    """The consent service's own section of its settings (FLOURISH_CONSENT_*)."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_CONSENT_", extra="ignore")

    # How often the retention scheduler looks for periods that ended (periods are in days).
    retention_interval_s: float = Field(default=900.0, gt=0)
    run_retention_scheduler: bool = True
    # Services whose own /pupils/{id}/subject-access the export gathers: {"assessment": "http://…"}.
    subject_access_peers: dict[str, str] = Field(default_factory=dict)


class ConsentServiceSettings(ServiceSettings):
    """Consent's settings tree: the kernel's, its own section and the data keys' (FLOURISH_DATA_KEK…)."""

    consent: ConsentSettings = Field(default_factory=ConsentSettings)
    data_keys: DataKeySettings = Field(default_factory=DataKeySettings)


@dataclass(frozen=True)
class Consent:
    """What consent's routes and background task use, built once by `bootstrap`."""

    settings: ConsentServiceSettings
    handlers: ConsentDeps
    decisions: DecisionReader
    retention: RetentionScheduler

    @property
    def subject_access_peers(self) -> Mapping[str, str]:
        return self.settings.consent.subject_access_peers


def bootstrap(settings: ConsentServiceSettings, *, kek: KeyEncryptionKey | None = None,
              clock: Callable[[], datetime] = utcnow) -> Bootstrap:
    """`kek`: the key-encryption key (by default FLOURISH_DATA_KEK, or a dev key under state_dir)."""
    kernel_settings = settings.kernel

    @asynccontextmanager
    async def build(runtime: Runtime) -> AsyncIterator[Consent]:
        vault = DataKeyVault(kek or LocalKek.from_settings(
            settings.data_keys, kernel_settings.state_dir, production=kernel_settings.environment == "production"
        ), data_keys)
        handlers = ConsentDeps(store=runtime.store, vault=vault, clock=clock)
        retention = RetentionScheduler(runtime.engine, handlers, interval_s=settings.consent.retention_interval_s)
        decisions = DecisionReader(kernel_settings.sync_database_url)
        # The decisions' read pool serves the API: a consumers pod serves none.
        if kernel_settings.role != "consumers":
            await decisions.start()
        try:
            yield Consent(settings, handlers, decisions, retention)
        finally:
            await decisions.stop()

    return build


async def retention_scheduler(runtime: Runtime, consent: Consent, stop: asyncio.Event) -> None:
    """Background task (consumers pods and `all` only): the retention scheduler, unless turned off
    (FLOURISH_CONSENT_RUN_RETENTION_SCHEDULER=false: the API pods of a split deployment)."""
    if consent.settings.consent.run_retention_scheduler:
        await consent.retention.run(stop)


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
    problems=errors_to_problems.PROBLEMS,
    background_tasks=[retention_scheduler],
    # Opens the sealed assessment and planning events the roster consumer reads.
    keyring=lambda runtime, consent: VaultKeyring(consent.handlers.vault, runtime.engine),
)


def app(settings: ConsentServiceSettings | Settings | None = None, *, kek: KeyEncryptionKey | None = None,
        clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """The consent service (uvicorn's factory: `uvicorn --factory services.consent.app:app`).

    `settings`: the settings tree, or the kernel's `Settings` alone; `kek` and `clock` are for tests."""
    tree = ConsentServiceSettings.of(settings)
    return create_app(replace(SPEC, bootstrap=bootstrap(tree, kek=kek, clock=clock)), tree.kernel)
