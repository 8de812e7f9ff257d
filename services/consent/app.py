"""The consent service: the consent ledger, sharing decisions, retention policies and their
scheduler, per-pupil data keys and erasure. Publishes ConsentGranted/Refused/Withdrawn,
LawfulBasisRecorded, RetentionPolicySet, RetentionExpired and PupilErased.

`app()` is the one factory (uvicorn's `--factory services.consent.app:app`, and every test);
`bootstrap` builds what routes and tasks use once, when the service starts: the data-key vault,
the sharing decisions' read pool and the retention scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.consent import errors_to_problems
from services.consent.api import router
from services.consent.consumers import ROSTER
from services.consent.decisions import DecisionReader
from services.consent.handlers import ConsentDeps, utcnow
from services.consent.restore import check_not_restored
from services.consent.scheduler import RetentionScheduler
from services.consent.tables import data_keys, kernel, metadata
from shared.datakeys import DataKeySettings, DataKeyVault, KekKeyring, KeyEncryptionKey, VaultKeyring
from shared.events.envelope import topic_for
from shared.production import https_problems, key_problems
from shared.service import Bootstrap, Runtime, ServiceSpec, create_app
from shared.settings import ServiceSettings, Settings

log = logging.getLogger(__name__)


class ConsentSettings(BaseSettings):
    """The consent service's own section of its settings (FLOURISH_CONSENT_*)."""

    model_config = SettingsConfigDict(env_prefix="FLOURISH_CONSENT_", extra="ignore")

    # How often the retention scheduler looks for periods that ended (periods are in days).
    retention_interval_s: float = Field(default=900.0, gt=0)
    run_retention_scheduler: bool = True
    # After a family opts out of processing by the online tool, the days a DPO has to record a
    # lawful reason to keep what was held (FLOURISH_CONSENT_OPT_OUT_GRACE_DAYS); then it is erased.
    opt_out_grace_days: int = Field(default=30, ge=0, le=3660)
    # Services whose own /pupils/{id}/subject-access the export gathers: {"assessment": "http://…"}.
    subject_access_peers: dict[str, str] = Field(default_factory=dict)
    # How long the start-up check may take to read the erasures published since its last check
    # (services/consent/restore.py): past it, the service does not start.
    restore_check_timeout_s: float = Field(default=120.0, gt=0)
    # The services whose clients get a pupil's data key (GET /pupils/{id}/data-key): those that
    # seal or open pupils' data (assessment, planning, reporting: each builds a DataKeyClient).
    # Any other client is refused (403), recorded and counted (FLOURISH_CONSENT_DATA_KEY_CLIENTS).
    data_key_clients: list[str] = Field(default_factory=lambda: ["assessment", "planning", "reporting"])
    # The services whose clients get the family's sealed contact (the reporting service's notices).
    family_contact_clients: list[str] = Field(default_factory=lambda: ["reporting"])


class ConsentServiceSettings(ServiceSettings):
    """Consent's settings tree: the kernel's, its own section and the data keys' (FLOURISH_DATA_KEK…)."""

    consent: ConsentSettings = Field(default_factory=ConsentSettings)
    data_keys: DataKeySettings = Field(default_factory=DataKeySettings)

    def production_problems(self) -> list[str]:
        """The KEK that wraps every pupil's data key, and the subject-access peers (personal data
        travels from them) over https."""
        return [*key_problems("FLOURISH_DATA_KEK", self.data_keys.data_kek),
                *https_problems("FLOURISH_CONSENT_SUBJECT_ACCESS_PEERS", self.consent.subject_access_peers.values(),
                                self.kernel)]


@dataclass(frozen=True)
class Consent:
    """What consent's routes and background task use, built once by `bootstrap`."""

    settings: ConsentServiceSettings
    handlers: ConsentDeps
    decisions: DecisionReader
    retention: RetentionScheduler
    # How each peer is reached ({name: transport}); tests pass ASGI transports, by default the network.
    subject_access_transports: Mapping[str, httpx.AsyncBaseTransport] = field(default_factory=dict)

    @property
    def subject_access_peers(self) -> Mapping[str, str]:
        return self.settings.consent.subject_access_peers


def bootstrap(settings: ConsentServiceSettings, *, kek: KeyEncryptionKey | KekKeyring | None = None,
              clock: Callable[[], datetime] = utcnow,
              subject_access_transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> Bootstrap:
    """`kek`: the key-encryption key (by default FLOURISH_DATA_KEK, or a dev key under state_dir);
    `subject_access_transports`: how the subject-access peers are reached (tests: ASGI transports)."""
    kernel_settings = settings.kernel

    @asynccontextmanager
    async def build(runtime: Runtime) -> AsyncIterator[Consent]:
        # Before anything is served: a database restored from a backup older than an erasure
        # would bring the pupil's key back. It refuses to start until reapply-erasures has run.
        checked = await check_not_restored(runtime.engine, runtime.kafka,
                                           topic_for("consent", kernel_settings.topic_prefix),
                                           timeout_s=settings.consent.restore_check_timeout_s)
        log.info("erasure register checked", extra={"count": checked})
        vault = DataKeyVault(kek or KekKeyring.from_settings(
            settings.data_keys, kernel_settings.state_dir, production=kernel_settings.environment == "production"
        ), data_keys)
        handlers = ConsentDeps(store=runtime.store, vault=vault, clock=clock)
        retention = RetentionScheduler(runtime.engine, handlers, interval_s=settings.consent.retention_interval_s,
                                       opt_out_grace_days=settings.consent.opt_out_grace_days)
        decisions = DecisionReader(kernel_settings.sync_database_url)
        # The decisions' read pool serves the API: a consumers pod serves none.
        if kernel_settings.role != "consumers":
            await decisions.start()
        try:
            yield Consent(settings, handlers, decisions, retention,
                          subject_access_transports if subject_access_transports is not None else {})
        finally:
            await decisions.stop()

    return build


async def retention_scheduler(runtime: Runtime, consent: Consent, stop: asyncio.Event) -> None:
    """Background task (consumers pods and `all` only): the retention scheduler, unless turned off
    (FLOURISH_CONSENT_RUN_RETENTION_SCHEDULER=false: the API pods of a split deployment)."""
    if consent.settings.consent.run_retention_scheduler:
        await consent.retention.run(stop)
    else:
        await stop.wait()  # a background task runs until the service stops (one that ends fails liveness)


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


def app(settings: ConsentServiceSettings | Settings | None = None, *, kek: KeyEncryptionKey | KekKeyring | None = None,
        clock: Callable[[], datetime] = utcnow,
        subject_access_transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> FastAPI:
    """The consent service (uvicorn's factory: `uvicorn --factory services.consent.app:app`).

    `settings`: the settings tree, or the kernel's `Settings` alone; `kek`, `clock` and
    `subject_access_transports` are for tests."""
    tree = ConsentServiceSettings.of(settings)
    return create_app(replace(SPEC, bootstrap=bootstrap(tree, kek=kek, clock=clock,
                                                        subject_access_transports=subject_access_transports),
                              production_checks=tree.production_problems),
                      tree.kernel)
