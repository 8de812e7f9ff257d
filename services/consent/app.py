"""The consent service: The consent ledger, retention policies and their scheduler, per-pupil data keys: publishes ConsentWithdrawn and RetentionExpired."""

from pathlib import Path

from fastapi import FastAPI

from services.consent.tables import kernel, metadata
from shared.service import ServiceSpec, create_app

SPEC = ServiceSpec(
    name="consent",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="The consent ledger, retention policies and their scheduler, per-pupil data keys: publishes ConsentWithdrawn and RetentionExpired.",
)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.consent.app:app`."""
    return create_app(SPEC)
