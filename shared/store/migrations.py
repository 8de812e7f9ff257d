"""Alembic for every service: each service's migrations live beside its tables and upgrade its own
schema, as a step of their own run by the schema's owner (the migration role: `flourish migrate`,
the launcher before it starts services, the test fixtures, a Kubernetes Job), under an advisory
lock so two runs at once migrate once. The service itself connects as a role that owns nothing
(shared/store/privileges.py) and only checks, when it starts, that its schema is at head
(`check_at_head`): it refuses to start on an older (or newer) schema.

Every service's migrations include the kernel's branch (kernel_migrations/: events, outbox,
inbox, idempotency keys and their row-level security), run in the service's own schema: a
service's first revision builds on the kernel's first (its down_revision), and a later kernel
revision is a head of every service, applied by the same `upgrade ... heads` (after the service's
own revisions; one that needs it first names it in depends_on).

Revisions are frozen: they spell out their DDL and never import tables.py, so editing a table
changes nothing an old revision does; the change comes as a new revision, and
tests/integration/schema fails until the migrated schema is again what the tables declare."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path

from alembic import command, context, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, Table, pool, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared import tenancy
from shared.settings import Settings
from shared.store import privileges
from shared.store.db import tls_connect_args

KERNEL_MIGRATIONS = Path(__file__).parent / "kernel_migrations"


def alembic_config(script_location: Path, settings: Settings) -> Config:
    """A service's migrations (`script_location`: its env.py and versions/) with the kernel's."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", os.pathsep.join([str(script_location / "versions"),
                                                                  str(KERNEL_MIGRATIONS)]))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine, script_location: Path, settings: Settings) -> None:
    """Bring the service's schema to the newest revision and its role's grants to the matrix;
    `engine` connects as the schema's owner (the migration role)."""
    config = alembic_config(script_location, settings)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        # "heads": a service may keep independent branches (one per subpackage), all applied.
        command.upgrade(config, "heads")

    async with engine.begin() as conn:
        await conn.run_sync(run)


class SchemaNotAtHead(RuntimeError):
    """The service's schema is not at the revisions its code was written for."""


async def check_at_head(engine: AsyncEngine, script_location: Path, schema: str, settings: Settings) -> None:
    """Refuse to run on a schema the migration step has not brought to this code's heads."""
    heads = set(ScriptDirectory.from_config(alembic_config(script_location, settings)).get_heads())
    try:
        async with engine.connect() as conn:
            found = set((await conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version'))).scalars())
    except ProgrammingError as error:  # no schema or version table, or no right to read it
        found, why = set(), f" ({type(error.orig).__name__ if error.orig else 'error'}: {str(error.orig).strip()})"
    else:
        why = ""
    if found != heads:
        raise SchemaNotAtHead(
            f"the {schema} schema is at {sorted(found) or 'no revision'}{why}, this code needs {sorted(heads)}: "
            "run the migration step as the schema's owner first (`flourish migrate`; in Kubernetes the "
            f"{schema}-migrate Job). The service does not migrate with its own credentials.")


def run_env(metadata: MetaData, *more: MetaData, plain_privileges: privileges.Matrix | None = None,
            rebuildable: Iterable[str] = ()) -> None:
    """The body of a service's migrations/env.py: `metadata` names the service's schema; `more`
    holds the rest of its tables, if it keeps them in several (what `alembic check` compares);
    `plain_privileges` the service role's privileges on tables made in plain SQL. After the
    revisions, in the same transaction, the service role's grants are made exactly the declared
    matrix (shared/store/privileges.py), and the `rebuildable` tables (read models rebuilt at run
    time) are given to the schema's rebuild role."""
    schema = metadata.schema
    assert schema, "a service's MetaData names its schema"
    assert all(m.schema == schema for m in more), "a service's tables live in its own schema"

    def migrate(connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"flourish.migrate.{schema}"})
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=[metadata, *more],
            version_table_schema=schema,
            include_schemas=False,
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            context.run_migrations()
        if not context.is_offline_mode():
            privileges.apply(connection, schema, privileges.matrix([metadata, *more], plain_privileges), rebuildable)

    shared_connection = context.config.attributes.get("connection")
    if shared_connection is not None:
        migrate(shared_connection)
        return

    async def standalone() -> None:
        # DATABASE_URL's libpq TLS parameters (sslmode, sslrootcert) become asyncpg's ssl argument.
        url, connect_args = tls_connect_args(context.config.get_main_option("sqlalchemy.url") or "")
        engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
        await engine.dispose()

    asyncio.run(standalone())


def service_schema() -> str:
    """For a revision of the kernel's branch: the schema of the service being migrated (the one
    its alembic_version lives in)."""
    schema: str | None = op.get_context().version_table_schema
    assert schema, "a service's migrations keep their version table in the service's schema"
    return schema


def apply_tenancy(tables: Iterable[Table]) -> None:
    """For a revision that creates tables: the tenant policy on each one it declared per trust
    (`op.create_table(..., info=tenancy.per_trust())`), derived from the declarations."""
    for statement in tenancy.row_level_security_statements(tables):
        op.execute(statement)
