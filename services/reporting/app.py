"""The reporting service: read models, dashboards, the intervention report, consent-gated sharing
with agencies over signed webhooks, the audit ledger, and the ops page."""

from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI

from services.reporting import audit, readmodels, sharing
from services.reporting.ops import router as ops_router
from services.reporting.tables import SCHEMA, kernel, metadata
from shared.service import ServiceSpec, create_app

LEDGER = audit.Ledger(SCHEMA)
SHARING = sharing.Sharing()
# Which trust and academy each pupil is in, as the read models know it: the ledger and sharing
# refuse an event that puts a known pupil or academy in another trust.
ROSTER = readmodels.LIVE.pupils

SPEC = ServiceSpec(
    name="reporting",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Read models, dashboards, reports, consent-gated sharing with agencies over signed webhooks, and the audit ledger.",
    routers=[audit.audit_router(LEDGER), sharing.sharing_router(SHARING),
             readmodels.readmodels_router(), ops_router],
    consumers=[replace(audit.ledger_consumer(LEDGER), roster=ROSTER),
               replace(sharing.withdrawal_consumer(SHARING), roster=ROSTER),
               readmodels.readmodels_consumer()],
    domain_errors=audit.DOMAIN_ERRORS,
    background_tasks=[audit.checkpointer(LEDGER), audit.periodic_verification(LEDGER), audit.keep_audit_topic,
                      sharing.delivery_worker(SHARING)],
)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.reporting.app:app`."""
    return create_app(SPEC)
