"""Alembic environment of the planning service (its schema only)."""

from services.planning.tables import metadata
from shared.store.migrations import run_env

run_env(metadata)
