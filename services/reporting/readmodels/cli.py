"""`flourish reporting rebuild`: rebuild the read models from the topics' history, live."""

from __future__ import annotations

import asyncio

import typer

from services.reporting.readmodels.rebuild import rebuild
from shared.settings import Settings

app = typer.Typer(help="The reporting service's read models.", no_args_is_help=True)


@app.command("rebuild")
def rebuild_command() -> None:
    """Replay the assessment and planning topics into fresh tables and swap them in atomically
    (the service keeps running and serving meanwhile)."""
    result = asyncio.run(rebuild(Settings()))
    typer.echo(f"rebuilt the read models from {result.events} events ({result.applied} applied) "
               f"in {result.seconds:.2f}s ({result.events_per_second:,.0f} events/s)")
