"""Who may do what to a service's tables: the declared privilege matrix (role → table →
privileges) and the statements that make the database's grants say exactly that.

Every schema belongs to the migration (owner) role that runs the migrations (`flourish` locally,
the cluster's owner secret in Kubernetes); the service connects as a role of its own,
`flourish_<service>`, that owns nothing. It gets USAGE on its schema (never CREATE), the
privileges below on each table, and USAGE on the schema's sequences. Owning nothing, it can
neither disable a trigger, nor grant, nor alter or drop a table: PostgreSQL allows those to an
owner only. Row-level security binds it like any other non-owner role.

A table declared in a service's MetaData gets READ_WRITE unless it says otherwise in its info
(`info={"privileges": APPEND_ONLY}`); tables made in plain SQL (the audit ledger) are declared by
name (`plain` in `matrix`). The grants are applied by the migration step after every upgrade,
from the code of the release being migrated to, so a database at any earlier head is brought to
them (tests/integration/schema) and a table dropped from the matrix loses its grants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, MetaData, text

SELECT, INSERT, UPDATE, DELETE = "SELECT", "INSERT", "UPDATE", "DELETE"
READ_WRITE = frozenset({SELECT, INSERT, UPDATE, DELETE})
APPEND_ONLY = frozenset({SELECT, INSERT})
READ_ONLY = frozenset({SELECT})
# Alembic's version table: the service reads it at start to refuse a schema that is not at head.
VERSION_TABLE = "alembic_version"
INFO_KEY = "privileges"

Matrix = Mapping[str, frozenset[str]]


def service_role(schema: str) -> str:
    """The login role a service connects with: `flourish_<schema>`."""
    return f"flourish_{schema}"


def rebuild_role(schema: str) -> str:
    """The role that owns a schema's rebuildable tables (read models) and nothing else: what needs
    DDL at run time (shadow tables, swapped with the live ones) runs as it, never as the service
    or the owner. USAGE and CREATE on the schema; it cannot alter a table it does not own."""
    return f"flourish_{schema}_rebuild"


def matrix(metadatas: Iterable[MetaData], plain: Matrix | None = None) -> dict[str, frozenset[str]]:
    """The service role's privileges on each table of the service's schema: every table of its
    MetaData (READ_WRITE unless its info declares otherwise), the plain-SQL tables, and the version
    table (read only)."""
    declared: dict[str, frozenset[str]] = {VERSION_TABLE: READ_ONLY}
    for metadata in metadatas:
        for table in metadata.tables.values():
            declared[table.name] = frozenset(table.info.get(INFO_KEY, READ_WRITE))
    declared.update(plain or {})
    return declared


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"{name!r} is not a safe identifier")
    return f'"{name}"'


def ensure_role_statement(role: str) -> str:
    """Create the role (no login: `flourish infra up` or CloudNativePG's managed roles give it its
    login and password) unless it exists; two databases migrating at once may race, one wins."""
    return f"""DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
    CREATE ROLE {_ident(role)} NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""


def grant_statements(schema: str, role: str, declared: Matrix) -> list[str]:
    """Revoke everything the role holds in the schema, then grant exactly the matrix."""
    s, r = _ident(schema), _ident(role)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}",
        f"REVOKE ALL ON SCHEMA {s} FROM {r}",
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
    ]
    for table, privileges in sorted(declared.items()):
        if privileges:
            statements.append(f"GRANT {', '.join(sorted(privileges))} ON {s}.{_ident(table)} TO {r}")
    return statements


def rebuild_statements(schema: str, rebuildable: Iterable[str]) -> list[str]:
    """The rebuild role owns the rebuildable tables and may create tables in the schema. The owner
    (who runs this) becomes its member, as PostgreSQL requires to give it the tables, and so may
    also run a rebuild itself (the rebuild SETs ROLE to it for its DDL). `rebuildable`: the tables
    it does not own yet — ALTER TABLE ... OWNER takes an ACCESS EXCLUSIVE lock, so a migration step
    run beside live consumers (a restart, say) must not take it for tables that need no change:
    that deadlocked with the read models' consumer."""
    s, r = _ident(schema), _ident(rebuild_role(schema))
    return [
        f"GRANT {r} TO CURRENT_USER",
        f"GRANT USAGE, CREATE ON SCHEMA {s} TO {r}",
        *[f"ALTER TABLE {s}.{_ident(table)} OWNER TO {r}" for table in sorted(rebuildable)],
    ]


def apply(connection: Connection, schema: str, declared: Matrix, rebuildable: Iterable[str] = ()) -> None:
    """Run as the schema's owner (the migration step): the service role exists and holds exactly
    the declared privileges; the rebuildable tables belong to the schema's rebuild role. A table
    the matrix names that does not exist is an error."""
    role = service_role(schema)
    connection.execute(text(ensure_role_statement(role)))
    rebuildable = list(rebuildable)
    if rebuildable:
        connection.execute(text(ensure_role_statement(rebuild_role(schema))))
        owned = set(connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s AND tableowner = :r"),
                                       {"s": schema, "r": rebuild_role(schema)}).scalars())
        rebuildable = [table for table in rebuildable if table not in owned]
        member = connection.execute(text("SELECT pg_has_role(current_user, :r, 'USAGE')"),
                                    {"r": rebuild_role(schema)}).scalar()
        for statement in rebuild_statements(schema, rebuildable)[0 if not member else 1:]:
            connection.execute(text(statement))
    missing = set(declared) - set(
        connection.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalars()
    )
    if missing:
        raise RuntimeError(f"the privilege matrix of {schema} names tables it does not have: {sorted(missing)}")
    for statement in grant_statements(schema, role, declared):
        connection.execute(text(statement))
