"""`flourish kafka provision | acls`: the admin step for Kafka. Topics, their retention and the
services' ACLs belong to the admin identity (FLOURISH_KAFKA_USERNAME / _PASSWORD of an admin, or
the local broker's `admin` in development); no service may create or reconfigure a topic."""

from __future__ import annotations

import asyncio
import json

import typer

from shared.settings import Settings

app = typer.Typer(help="Kafka's admin step: topics, retention and each service's ACLs.", no_args_is_help=True)


@app.command()
def provision(prefix: str | None = typer.Option(None, help="Topic prefix (default FLOURISH_TOPIC_PREFIX).")) -> None:
    """Create the prefix's topics that are missing, keep the audit topics forever, apply the ACL
    table (idempotent). `flourish infra up` does it for the local broker."""
    from flourish.kafka_acls import provision as run

    settings = Settings()
    chosen = settings.topic_prefix if prefix is None else prefix
    asyncio.run(run(settings, chosen))
    typer.echo(f"kafka: topics and ACLs of {chosen!r} in place")


@app.command()
def acls(prefix: str | None = typer.Option(None, help="Topic prefix (default FLOURISH_TOPIC_PREFIX).")) -> None:
    """Print the ACL table (identity -> bindings) as JSON: what a KafkaUser of each service allows."""
    from flourish.kafka_acls import kafka_acls

    table = kafka_acls(Settings().topic_prefix if prefix is None else prefix)
    typer.echo(json.dumps({identity: [{"resource": b.resource_type.name, "name": b.name,
                                       "pattern": b.pattern_type.name, "operation": b.operation.name}
                                      for b in bindings] for identity, bindings in table.items()}, indent=2))
