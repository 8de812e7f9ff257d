"""The migration step: every service's schema brought to head as its owner (the migration role),
before any service starts. `flourish migrate`, the launcher (`start_services`) and the test
fixtures run it; the services themselves only check they are at head."""

from __future__ import annotations

import importlib
from pathlib import Path

from shared.settings import Settings
from shared.store.db import create_engine
from shared.store.migrations import upgrade

SERVICE_NAMES = ("assessment", "planning", "consent", "reporting")


def migrations_of(service: str) -> Path:
    """The service's migrations folder, as its ServiceSpec names it."""
    return Path(importlib.import_module(f"services.{service}.app").SPEC.migrations)


async def migrate(settings: Settings, services: tuple[str, ...] = SERVICE_NAMES) -> None:
    """Upgrade each service's schema to head and apply its role's grants, connected with
    `settings.database_url`, which must be the schema owner's."""
    engine = create_engine(settings, pool_size=1)
    try:
        for service in services:
            await upgrade(engine, migrations_of(service), settings)
    finally:
        await engine.dispose()
