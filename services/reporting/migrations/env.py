"""Alembic environment of the reporting service (its schema only)."""

from services.reporting.tables import metadata
from shared.store.migrations import run_env

run_env(metadata)
