"""`flourish reporting sharing`: the dead letters of webhook delivery, from the command line.

    flourish reporting sharing dead-letters --trust <uuid> [--agency <uuid>]
    flourish reporting sharing replay --trust <uuid> <delivery-id>...     these, due again now
    flourish reporting sharing replay --trust <uuid> --agency <uuid>      all of an agency's

A replayed delivery starts the schedule afresh; the running delivery worker sends it at its next
poll, asking consent again for a share, and parks it again if the endpoint is still disabled.
The same as POST /sharing/deliveries/{id}/replay (DPO or trust admin)."""

from __future__ import annotations

import asyncio
from typing import Annotated
from uuid import UUID

import typer

from shared.settings import Settings

app = typer.Typer(help="Webhook deliveries to agencies: dead letters and replay.", no_args_is_help=True)

Trust = Annotated[UUID, typer.Option("--trust", help="The trust whose deliveries these are.")]
Agency = Annotated[UUID | None, typer.Option("--agency", help="Only this agency's.")]


async def _in_trust(trust: UUID, work):  # type: ignore[no-untyped-def]
    from shared.store.db import create_engine
    from shared.tenancy import tenant_scope

    engine = create_engine(Settings(), pool_size=1)
    try:
        with tenant_scope(trust):
            async with engine.begin() as conn:
                return await work(conn)
    finally:
        await engine.dispose()


@app.command("dead-letters")
def list_dead_letters(trust: Trust, agency: Agency = None) -> None:
    """The trust's dead-lettered deliveries and undeliverable deletion notices (ids and codes only)."""
    from services.reporting.sharing.core import dead_letters

    rows = asyncio.run(_in_trust(trust, lambda conn: dead_letters(conn, trust, agency)))
    for row in rows:
        typer.echo(f"{row.delivery_id}  agency {row.agency_id}  {row.kind:<15} {row.status:<13} "
                   f"tries {row.attempts}  last {row.last_status_code or '-'} {row.last_error or ''}".rstrip())
    typer.echo(f"{len(rows)} to replay")


@app.command("replay")
def replay(trust: Trust, deliveries: Annotated[list[UUID] | None, typer.Argument(help="Delivery ids.")] = None,
           agency: Agency = None) -> None:
    """Make dead letters (and undeliverable notices) due again now."""
    from services.reporting.sharing.core import dead_letters, requeue

    if not deliveries and agency is None:
        typer.echo("name delivery ids, or --agency for all of an agency's", err=True)
        raise typer.Exit(2)

    async def work(conn):  # type: ignore[no-untyped-def]
        ids = list(deliveries or []) + [row.delivery_id for row in
                                        (await dead_letters(conn, trust, agency) if agency is not None else [])]
        return ids, await requeue(conn, trust, ids)

    asked, done = asyncio.run(_in_trust(trust, work))
    for delivery_id in done:
        typer.echo(f"replaying {delivery_id}")
    skipped = set(asked) - set(done)
    for delivery_id in sorted(skipped, key=str):
        typer.echo(f"not replayable (unknown, or not dead-lettered): {delivery_id}", err=True)
    typer.echo(f"{len(done)} replayed")
    if skipped:
        raise typer.Exit(1)
