"""`flourish migrate`: the migration step. Brings every service's schema to head and its role's
grants to the declared matrix, connected as the schema's owner (DATABASE_URL must be the owner's:
the migration role's, never a service's). Services only check they are at head when they start."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from flourish.local.migrate import SERVICE_NAMES
from flourish.local.migrate import migrate as migrate_services
from shared.production import ProductionMisconfigured, validate_production
from shared.settings import Settings


def migrate(service: Annotated[list[str] | None, typer.Option(help="Only this service's schema (repeatable).")] = None,
            ) -> None:
    """Upgrade the services' schemas to head and apply their roles' grants, as the owner."""
    service = service or list(SERVICE_NAMES)
    unknown = sorted(set(service) - set(SERVICE_NAMES))
    if unknown:
        typer.echo(f"unknown service(s): {', '.join(unknown)}", err=True)
        raise typer.Exit(2)
    settings = Settings()
    try:
        validate_production(settings, migration=True)  # DATABASE_URL's TLS, before connecting
    except ProductionMisconfigured as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    asyncio.run(migrate_services(settings, tuple(service)))
    typer.echo(f"migrated: {', '.join(service)}")
