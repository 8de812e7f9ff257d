"""Alembic environment of the consent service (its schema only)."""

from services.consent.tables import metadata
from shared.store.migrations import run_env

run_env(metadata)
