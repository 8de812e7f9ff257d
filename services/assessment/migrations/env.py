"""Alembic environment of the assessment service (its schema only)."""

from services.assessment.tables import metadata
from shared.store.migrations import run_env

run_env(metadata)
