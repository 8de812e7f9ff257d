"""The assessment service: Framework, roster, observations, assessments and scoring: publishes ObservationRecorded and StrandScored."""

from pathlib import Path

from fastapi import FastAPI

from services.assessment.tables import kernel, metadata
from shared.service import ServiceSpec, create_app

SPEC = ServiceSpec(
    name="assessment",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Framework, roster, observations, assessments and scoring: publishes ObservationRecorded and StrandScored.",
)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.assessment.app:app`."""
    return create_app(SPEC)
