"""The reporting service: Read models, dashboards, reports, consent-gated sharing with agencies over signed webhooks, and the audit ledger."""

from pathlib import Path

from fastapi import FastAPI

from services.reporting.tables import kernel, metadata
from shared.service import ServiceSpec, create_app

SPEC = ServiceSpec(
    name="reporting",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Read models, dashboards, reports, consent-gated sharing with agencies over signed webhooks, and the audit ledger.",
)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.reporting.app:app`."""
    return create_app(SPEC)
