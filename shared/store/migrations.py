"""Alembic for every service: each service's migrations live beside its tables and upgrade its own
schema, at start-up (under an advisory lock, so replicas starting together migrate once) or from
the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import Connection, MetaData, pool, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_engine_from_config

from shared.settings import Settings


def alembic_config(script_location: Path, settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine, script_location: Path, settings: Settings) -> None:
    """Bring the service's schema to the newest revision, on the service's own engine."""
    config = alembic_config(script_location, settings)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        # "heads": a service may keep independent branches (one per subpackage), all applied.
        command.upgrade(config, "heads")

    async with engine.begin() as conn:
        await conn.run_sync(run)


def run_env(metadata: MetaData) -> None:
    """The body of a service's migrations/env.py."""
    schema = metadata.schema
    assert schema, "a service's MetaData names its schema"

    def migrate(connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"flourish.migrate.{schema}"})
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=False,
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            context.run_migrations()

    shared_connection = context.config.attributes.get("connection")
    if shared_connection is not None:
        migrate(shared_connection)
        return

    async def standalone() -> None:
        engine = async_engine_from_config(
            context.config.get_section(context.config.config_ini_section, {}),
            prefix="sqlalchemy.",
            poolclass=pool.NullPool,
        )
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
        await engine.dispose()

    asyncio.run(standalone())


def create_kernel_tables(schema: str) -> None:
    """For a service's first revision: the kernel's tables (events, outbox, inbox, idempotency keys).

    Built from kernel_tables() as it stands at revision 1; a later change to the kernel's tables
    comes as a new revision in every service, never as an edit here."""
    from shared.store.tables import kernel_tables

    metadata = MetaData(schema=schema)
    kernel_tables(metadata)
    metadata.create_all(op.get_bind())


def drop_kernel_tables(schema: str) -> None:
    for name in ("idempotency_keys", "inbox", "outbox", "events"):
        op.drop_table(name, schema=schema)
