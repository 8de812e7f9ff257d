"""`flourish platform up | down | status`: the whole platform on one machine, with demo data."""

from __future__ import annotations

import asyncio

import typer

from flourish.local import InfraError
from flourish.local.services import (
    front_status,
    services_status,
    start_front,
    start_services,
    stop_front,
    stop_services,
)
from flourish.local.stack import ensure_stack, stack_status, stop_stack
from shared.settings import Settings, mark_development

app = typer.Typer(help="Start, inspect and stop the four services on top of the local stack.", no_args_is_help=True)


@app.command()
def up(demo: bool = typer.Option(True, help="Load the demo trust.")) -> None:
    """Start Kafka and PostgreSQL, migrate and start the services, load the demo trust, print URLs.
    Marks the state directory as a development checkout's (FLOURISH_ENVIRONMENT, when set, still wins)."""
    mark_development(Settings().state_dir)
    settings = Settings()
    try:
        endpoints = ensure_stack(settings)
        environment = {
            "DATABASE_URL": endpoints.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap_servers,
        }
        processes = start_services(settings, environment)
        front = start_front(settings)
    except InfraError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    if demo:
        loaded = asyncio.run(_load_demo(endpoints.database_url))
        typer.echo(f"demo trust: {loaded} pupils enrolled (0 means it was already loaded)")
    typer.echo("")
    typer.echo(f"PostgreSQL  {endpoints.database_url.split('@')[-1]}")
    typer.echo(f"Kafka       {endpoints.kafka_bootstrap_servers}")
    for process in processes:
        typer.echo(f"{process.name:<11} {process.url}  "
                   f"(docs {process.url}/docs, events {process.url}/asyncapi, metrics {process.url}/metrics)")
    for process in front:
        label = "sign-in" if process.name == "oidc" else process.name
        extra = "  (the dev OpenID provider: pick a demo user)" if process.name == "oidc" else \
            "  (sign in as the demo SENCo, Sam Okafor)"
        typer.echo(f"{label:<11} {process.url}{extra}")
    typer.echo("")
    typer.echo("A token for the demo trust: flourish dev-token --role senco --trust <trust id> --academy <academy id>")
    from services.assessment.demo import DEMO

    typer.echo(f"  trust {DEMO.trust_id}")
    for name, academy_id in DEMO.academies.items():
        typer.echo(f"  academy {academy_id}  {name}")


@app.command()
def down(infra: bool = typer.Option(True, help="Stop Kafka and PostgreSQL too.")) -> None:
    """Stop the services (and the local stack that `up` started)."""
    settings = Settings()
    for name in [*stop_front(settings), *stop_services(settings)]:
        typer.echo(f"{name}: stopped")
    if infra:
        for name in stop_stack(settings):
            typer.echo(f"{name}: stopped")


@app.command()
def status() -> None:
    """What runs where."""
    settings = Settings()
    for component in [*stack_status(settings), *services_status(settings), *front_status(settings)]:
        state = "healthy" if component.healthy else ("running" if component.running else "stopped")
        typer.echo(f"{component.name:<11} {state:<8} {component.address:<28} "
                   f"pid {component.pid or '-':<8} {component.managed_by}")


async def _load_demo(database_url: str) -> int:
    from services.assessment.demo import load_demo
    from shared.store.db import create_engine

    engine = create_engine(Settings(database_url=database_url), pool_size=1)
    try:
        return await load_demo(engine)
    finally:
        await engine.dispose()
