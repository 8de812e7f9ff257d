"""The reporting service: Read models, dashboards, reports, consent-gated sharing with agencies over signed webhooks, and the audit ledger."""

from pathlib import Path

from fastapi import FastAPI

from services.reporting import audit
from services.reporting.tables import SCHEMA, kernel, metadata
from shared.service import ServiceSpec, create_app

LEDGER = audit.Ledger(SCHEMA)

SPEC = ServiceSpec(
    name="reporting",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Read models, dashboards, reports, consent-gated sharing with agencies over signed webhooks, and the audit ledger.",
    routers=[audit.audit_router(LEDGER)],
    consumers=[audit.ledger_consumer(LEDGER)],
    domain_errors=audit.DOMAIN_ERRORS,
    background_tasks=[audit.checkpointer(LEDGER), audit.periodic_verification(LEDGER), audit.keep_audit_topic],
)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.reporting.app:app`."""
    return create_app(SPEC)
