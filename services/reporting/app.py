"""The reporting service: read models, dashboards, the intervention report, consent-gated sharing
with agencies over signed webhooks, the audit ledger, and the ops page.

`app()` is the one factory (uvicorn's `--factory services.reporting.app:app`, and every test);
`bootstrap` builds what routes, consumers and tasks use once, when the service starts, and closes
it when it stops: the audit ledger (`.audit`), sharing with its consent and webhook clients
(`.sharing`) and the calls to the assessment service (`.peers`). The subpackages find their part
of `Reporting` by those names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import Field

from services.reporting import audit, errors_to_problems, readmodels, sharing
from services.reporting.audit import Audit, AuditSettings
from services.reporting.audit.signing import SigningKeyUnavailable, load_signer
from services.reporting.ops import router as ops_router
from services.reporting.readmodels import Peers
from services.reporting.readmodels.opt_outs import with_opt_outs
from services.reporting.sharing import Notices, NoticeSettings, Sharing, SharingSettings
from services.reporting.sharing.webhooks import publish_webhooks
from services.reporting.subject_access import router as subject_access_router
from services.reporting.tables import SCHEMA, kernel, metadata
from shared.datakeys import DataKeyClient, DataKeySettings, KekKeyring
from shared.peers import ServiceTokens
from shared.production import key_problems
from shared.service import Bootstrap, Runtime, ServiceSpec, create_app
from shared.settings import ServiceSettings, Settings

# Which trust and academy each pupil is in, as the read models know it: the ledger and sharing
# refuse an event that puts a known pupil or academy in another trust.
ROSTER = readmodels.LIVE.pupils


class ReportingServiceSettings(ServiceSettings):
    """Reporting's settings tree: the kernel's, the audit ledger's (FLOURISH_AUDIT_*), sharing's
    (FLOURISH_SHARING_*), the families' notices' (FLOURISH_NOTICES_*: the SMTP server) and the data
    keys' (FLOURISH_DATA_KEK wraps agencies' signing secrets)."""

    audit: AuditSettings = Field(default_factory=AuditSettings)
    sharing: SharingSettings = Field(default_factory=SharingSettings)
    notices: NoticeSettings = Field(default_factory=NoticeSettings)
    data_keys: DataKeySettings = Field(default_factory=DataKeySettings)

    def production_problems(self) -> list[str]:
        """The KEK that wraps agencies' signing secrets, the key that signs audit checkpoints (never
        a generated one), and the S3 witness's bucket when it is the witness."""
        problems = key_problems("FLOURISH_DATA_KEK", self.data_keys.data_kek)
        if self.audit.signing_key is None and self.audit.signing_key_path is None:
            problems.append("FLOURISH_AUDIT_SIGNING_KEY (or FLOURISH_AUDIT_SIGNING_KEY_PATH) is missing: the "
                            "Ed25519 key that signs audit checkpoints")
        else:
            try:
                load_signer(self.audit)
            except SigningKeyUnavailable:
                problems.append("FLOURISH_AUDIT_SIGNING_KEY(_PATH) is not a readable Ed25519 private key (PEM)")
        if self.audit.witness == "s3" and not self.audit.s3_bucket:
            problems.append("FLOURISH_AUDIT_S3_BUCKET is missing (FLOURISH_AUDIT_WITNESS=s3)")
        return problems


@dataclass(frozen=True)
class Reporting:
    """What reporting's routes, consumers and tasks use, built once by `bootstrap`."""

    settings: ReportingServiceSettings
    audit: Audit
    sharing: Sharing
    peers: Peers
    # Pupils' data keys from the consent service: the read models' consumer opens the sealed
    # assessment and planning events with them.
    keyring: DataKeyClient


def bootstrap(settings: ReportingServiceSettings, *, assessment_http: httpx.AsyncClient | None = None,
              consent_transport: httpx.AsyncBaseTransport | None = None) -> Bootstrap:
    """`assessment_http`: a client for the assessment service (tests: on its ASGI transport; by
    default one of reporting's own, to Settings.assessment_url); `consent_transport`: how the
    consent service's decisions are asked (tests: its ASGI transport; by default the network)."""
    kernel_settings = settings.kernel

    @asynccontextmanager
    async def build(runtime: Runtime) -> AsyncIterator[Reporting]:
        def kek() -> KekKeyring:
            return KekKeyring.from_settings(settings.data_keys, kernel_settings.state_dir,
                                          production=kernel_settings.environment == "production")

        consent = sharing.ConsentClient(kernel_settings, timeout_s=settings.sharing.consent_timeout_s,
                                        transport=consent_transport)
        # One data-key client: the families' notices open the contact (sealed) with the pupil's key,
        # and the kernel opens the sealed parts of assessment's and planning's events with it.
        tokens = ServiceTokens(kernel_settings, "reporting")
        consent_http = httpx.AsyncClient(base_url=kernel_settings.consent_url, transport=consent_transport,
                                         timeout=settings.notices.consent_timeout_s)
        keyring = DataKeyClient(kernel_settings.consent_url, tokens.for_trust, http=consent_http,
                                ttl_s=settings.data_keys.data_key_cache_ttl_s,
                                max_entries=settings.data_keys.data_key_cache_size)
        notices = Notices(settings.notices, consent_http, tokens, keyring)
        shares = Sharing(settings.sharing, consent, kek, sharing.webhook_client(settings.sharing), notices)
        http = assessment_http or httpx.AsyncClient(base_url=kernel_settings.assessment_url, timeout=10.0)
        peers = Peers(tokens, http)
        try:
            yield Reporting(settings, Audit.of(settings.audit, SCHEMA), shares, peers, keyring)
        finally:
            await shares.close()
            await consent_http.aclose()
            if http is not assessment_http:
                await http.aclose()

    return build


SPEC = ServiceSpec(
    name="reporting",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Read models, dashboards, reports, consent-gated sharing with agencies over signed webhooks, "
                "and the audit ledger.",
    routers=[audit.audit_router(), sharing.sharing_router(), readmodels.readmodels_router(), ops_router,
             subject_access_router],
    consumers=[audit.ledger_consumer(ROSTER),
               replace(with_opt_outs(sharing.withdrawal_consumer()), roster=ROSTER),
               readmodels.readmodels_consumer(),
               readmodels.erasure_consumer()],
    problems=errors_to_problems.PROBLEMS,
    background_tasks=[audit.sign_checkpoints, audit.verify_periodically,
                      sharing.deliver_webhooks, sharing.send_notices],
    keyring=lambda runtime, reporting: reporting.keyring,
)


def app(settings: ReportingServiceSettings | Settings | None = None, *,
        assessment_http: httpx.AsyncClient | None = None,
        consent_transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The reporting service (uvicorn's factory: `uvicorn --factory services.reporting.app:app`).

    `settings`: the settings tree, or the kernel's `Settings` alone; the rest are for tests."""
    tree = ReportingServiceSettings.of(settings)
    spec = replace(SPEC, bootstrap=bootstrap(tree, assessment_http=assessment_http, consent_transport=consent_transport),
                   production_checks=tree.production_problems)
    service = create_app(spec, tree.kernel)
    publish_webhooks(service)  # the payloads agencies receive, in /openapi.json's `webhooks`
    return service
