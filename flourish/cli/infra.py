"""`flourish infra up|down|status`: the command line for the local Kafka + PostgreSQL stack."""

from __future__ import annotations

from typing import NoReturn

import typer
from sqlalchemy.engine import make_url

from flourish.local import ComponentStatus, InfraError, postgres
from flourish.local.stack import ensure_stack, stack_status, stop_stack
from shared.settings import Settings, mark_development

app = typer.Typer(
    help="Run the local Kafka broker and PostgreSQL server that the services and tests use.",
    no_args_is_help=True,
)


@app.command()
def up() -> None:
    """Start whatever is not running yet and wait until it answers; print the endpoints. Marks the
    state directory as a development checkout's (FLOURISH_ENVIRONMENT, when set, still wins)."""
    mark_development(Settings().state_dir)
    settings = Settings()
    try:
        endpoints = ensure_stack(settings)
    except InfraError as error:
        _fail(error)
    _print_table(stack_status(settings))
    # KEY=value lines, so `eval "$(flourish infra up 2>/dev/null | grep =)"` points a shell at it.
    typer.echo(f"DATABASE_URL={_shown_url(settings, endpoints.database_url)}")
    typer.echo(f"KAFKA_BOOTSTRAP_SERVERS={endpoints.kafka_bootstrap_servers}")


@app.command()
def down() -> None:
    """Stop what `up` started (pid files); never touches an external server."""
    try:
        stopped = stop_stack(Settings())
    except InfraError as error:
        _fail(error)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")


@app.command()
def status() -> None:
    """Show each component, who runs it, where, and whether it answers; exit 1 if any does not."""
    statuses = stack_status(Settings())
    _print_table(statuses)
    if not all(item.healthy for item in statuses):
        raise typer.Exit(1)


def _print_table(statuses: list[ComponentStatus]) -> None:
    rows = [("COMPONENT", "STATE", "PID", "ADDRESS", "MANAGED BY", "DETAIL")]
    for item in statuses:
        rows.append((item.name, _state(item), str(item.pid or "-"), item.address, item.managed_by, item.detail))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1])


def _state(item: ComponentStatus) -> str:
    if item.healthy:
        return "healthy"
    if item.running:
        return "unhealthy"
    return "stopped" if item.managed else "unreachable"


def _shown_url(settings: Settings, url: str) -> str:
    # The local default password is public; one the user supplied stays off the screen.
    if postgres.is_external(settings):
        return make_url(url).render_as_string(hide_password=True)
    return url


def _fail(error: InfraError) -> NoReturn:
    typer.echo(str(error), err=True)
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
