"""The planning service: Suggested targets and activities, action plans issued by practitioners, reviews and the session log: publishes PlanIssued."""

from pathlib import Path

from fastapi import FastAPI

from services.planning.tables import kernel, metadata
from shared.service import ServiceSpec, create_app

SPEC = ServiceSpec(
    name="planning",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Suggested targets and activities, action plans issued by practitioners, reviews and the session log: publishes PlanIssued.",
)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.planning.app:app`."""
    return create_app(SPEC)
