"""Issue 13 item 5, schema once: the migrations (the kernel's branch and each service's frozen
revisions) build exactly what the tables declare; a database migrated before the schema was frozen
upgrades to exactly what a fresh install is; and every table with a trust_id says its tenancy,
which the database's row-level security matches.

The database "at today's heads" is fixtures/schema_at_aa1c866.sql: the four schemas as the
migrations of commit aa1c866 built them, dumped schema-only with their alembic_version rows
(fixtures/make_snapshot.py says how). A snapshot rather than the old scripts kept as fixtures:
those imported the live tables.py, so run today they would no longer build what was deployed."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.assessment.tables import metadata as assessment
from services.consent.tables import metadata as consent
from services.planning.tables import metadata as planning
from services.reporting.audit.tables import PER_TRUST_TABLES as AUDIT_TABLES
from services.reporting.audit.tables import create_statements as audit_ledger
from services.reporting.readmodels.tables import LIVE as READ_MODELS
from services.reporting.sharing.tables import metadata as sharing
from services.reporting.tables import metadata as reporting
from shared import tenancy
from shared.settings import Settings
from shared.store import privileges
from shared.store.db import create_engine
from shared.store.migrations import upgrade
from tests.conftest import database_of_its_own
from tests.integration.schema.catalog import catalog, differences

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[3]
SNAPSHOT = Path(__file__).parent / "fixtures" / "schema_at_aa1c866.sql"
TODAYS_HEADS = {
    "assessment": {"assessment_0004_idempotency_rls"},
    "planning": {"planning_0003_idempotency_rls"},
    "consent": {"consent_0003_idempotency_rls"},
    "reporting": {"reporting_0005_idempotency_rls"},
}
# What revisions after the freeze added (each names its objects here): the snapshot predates them.
# The kernel's events.transaction_id (kernel_0002, issue 18) is in every service's schema.
_KERNEL_AFTER_FREEZE = {"transaction_id", "events_transaction_order", "events_transaction_id_not_null"}
AFTER_FREEZE: dict[str, set[str]] = {
    "assessment": _KERNEL_AFTER_FREEZE,
    "planning": _KERNEL_AFTER_FREEZE,
    "consent": {"erasure_register_checks", "erasure_register_checks_pkey", "data_keys_kek_id_names_the_wrapping",
                "family_contacts"} | _KERNEL_AFTER_FREEZE,
    "reporting": {"sharing_family_notices"} | _KERNEL_AFTER_FREEZE,
}
# Tables that revisions after the freeze changed on purpose: the freeze's own comparison (the
# snapshot against a fresh install) leaves them out; the upgrade comparison above still covers them.
CHANGED_SINCE_FREEZE: dict[str, set[str]] = {
    "planning": {"session_notes"},  # seal_0004: session notes sealed
    "reporting": {"sharing_shares", "sharing_attempts", "sharing_agencies"},  # documents_0009, agency_0010
}
# Each service's tables, as its code declares them (the audit ledger is plain SQL: its tables are
# declared by name in services/reporting/audit/tables.py).
DECLARED: dict[str, list[MetaData]] = {
    "assessment": [assessment],
    "planning": [planning],
    "consent": [consent],
    "reporting": [reporting, READ_MODELS.metadata, sharing],
}
PLAIN_SQL_PER_TRUST = {"reporting": set(AUDIT_TABLES)}
# What revisions made after the freeze changed, which the freeze's snapshot cannot have: left out of
# (or, for a column made nullable, put back as it was in) the comparison with the snapshot. Each
# later revision adds its entry.
SINCE_THE_FREEZE_TABLES = {"reporting": {"erasure_register", "processing_opt_outs"}, "assessment": {"processing_opt_outs"},
                           "planning": {"processing_opt_outs"}, "consent": {"opt_out_retention"}}
SINCE_THE_FREEZE_NULLABLE = {"reporting": {("sharing_deliveries", "pupil_id")}}  # reporting_0006_erasure_register
SERVICES = tuple(DECLARED)


def _snapshot(role: str, server_version: int) -> str:
    """The snapshot, for this server: it was dumped from PostgreSQL 18 as role `flourish`, whose
    name its privileges (the audit ledger's revoked UPDATE/DELETE/TRUNCATE) carry."""
    sql = re.sub(r"^(REVOKE|GRANT) (.*) (FROM|TO) flourish;$", rf"\1 \2 \3 {role};", SNAPSHOT.read_text(),
                 flags=re.MULTILINE)
    if server_version < 170000:  # neither the setting nor the privilege exists before 17
        sql = re.sub(r"^SET transaction_timeout = 0;$", "", sql, flags=re.MULTILINE).replace(",MAINTAIN ", " ")
    return sql


async def _migrate(engine: AsyncEngine, settings: Settings) -> None:
    for service in SERVICES:
        await upgrade(engine, ROOT / "services" / service / "migrations", settings)


async def _catalogs(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        result: dict[str, Any] = {service: await catalog(conn, service) for service in SERVICES}
        for service in SERVICES:
            versions = await conn.execute(text(f'SELECT version_num FROM "{service}".alembic_version'))
            result[f"{service} versions"] = set(versions.scalars())
    return result


@pytest.fixture(scope="module")
async def fresh(stack_settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A database the migrations built from nothing."""
    with database_of_its_own(stack_settings, "schema_fresh") as settings:
        engine = create_engine(settings, pool_size=2)
        await _migrate(engine, settings)
        yield engine
        await engine.dispose()


async def test_a_database_at_the_heads_before_the_freeze_upgrades_to_exactly_a_fresh_install(
    fresh: AsyncEngine, stack_settings: Settings
) -> None:
    with database_of_its_own(stack_settings, "schema_upgraded") as settings:
        dsn = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            role, version = await conn.fetchrow(
                "SELECT quote_ident(current_user), current_setting('server_version_num')::int")
            await conn.execute(_snapshot(role, version))
        finally:
            await conn.close()
        engine = create_engine(settings, pool_size=2)
        try:
            before = await _catalogs(engine)
            assert {s: before[f"{s} versions"] for s in SERVICES} == TODAYS_HEADS
            await _migrate(engine, settings)
            upgraded = await _catalogs(engine)
        finally:
            await engine.dispose()
    installed = await _catalogs(fresh)

    for service in SERVICES:
        assert upgraded[f"{service} versions"] == installed[f"{service} versions"], service
        assert not differences(upgraded[service], installed[service]), (
            f"{service}: upgraded (first) and freshly installed (second) differ:\n"
            + "\n".join(differences(upgraded[service], installed[service]))
        )
    # The snapshot's schema is what the frozen migrations make: the freeze changed nothing (but
    # the service roles' grants, which the migration step adds: tests/integration/roles).
    # Tables that revisions after the freeze add are left out here: the upgrade above proves they
    # are made exactly as a fresh install makes them.
    for service in SERVICES:
        frozen = after_freeze_left_out(owners_only(as_at_the_freeze(installed[service], service), service), service)
        then, now = without_changed(before[service], service), without_changed(frozen, service)
        assert not differences(then, now), (
            f"{service}: at aa1c866's heads (first) and freshly installed (second) differ:\n"
            + "\n".join(differences(then, now))
        )


def after_freeze_left_out(rows: dict[str, list[tuple[Any, ...]]], service: str) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog without the objects revisions after the freeze added (AFTER_FREEZE): a row naming
    one of them, or defined ON one of those tables (its indexes, constraints, policies)."""
    names = AFTER_FREEZE.get(service, set())

    def later(row: tuple[Any, ...]) -> bool:
        return any(isinstance(v, str) and (v in names or any(f" ON {service}.{t} " in v for t in names)) for v in row)

    return {kind: [row for row in found if not later(row)] if isinstance(found, list) else found
            for kind, found in rows.items()}


def as_at_the_freeze(rows: dict[str, list[tuple[Any, ...]]], service: str) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog without what revisions after the freeze changed (SINCE_THE_FREEZE_*)."""
    added, loosened = SINCE_THE_FREEZE_TABLES.get(service, set()), SINCE_THE_FREEZE_NULLABLE.get(service, set())

    def table_of(kind: str, row: tuple[Any, ...]) -> str:
        if kind == "indexes":
            found = re.search(r" ON (?:ONLY )?\S+?\.(\w+) ", row[1])
            return found.group(1) if found else ""
        return str(row[0])

    kept: dict[str, list[tuple[Any, ...]]] = {}
    for kind, kind_rows in rows.items():
        kept[kind] = []
        for row in kind_rows:
            if table_of(kind, row) in added:
                continue
            if kind == "columns" and (row[0], row[2]) in loosened:
                row = (*row[:4], True, *row[5:])
            kept[kind].append(row)
    if any(row[2] == "n" for row in kept["constraints"]):  # PostgreSQL 18 lists NOT NULL as constraints
        kept["constraints"] += [(table, f"{table}_{column}_not_null", "n", f"NOT NULL {column}")
                                for table, column in loosened]
    return kept


def without_changed(rows: dict[str, list[tuple[Any, ...]]], service: str) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog without the rows of tables a revision after the freeze changed (CHANGED_SINCE_FREEZE)."""
    changed = CHANGED_SINCE_FREEZE.get(service, set())
    return {kind: [row for row in found if not (row and row[0] in changed)] for kind, found in rows.items()}


def owners_only(rows: dict[str, list[tuple[Any, ...]]], service: str) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog without the service role's grants (shared/store/privileges.py), and with an
    owner's full default privileges written as PostgreSQL writes the default: nothing."""
    role = privileges.service_role(service)

    def acl(value: str) -> str:
        entries = [e for e in value.strip("{}").split(",") if e and not e.startswith(f"{role}=")]
        entries = [e for e in entries if not re.fullmatch(r'("?)([^=]+)\1=arwdDxtm?/\1\2\1', e)]
        return "{" + ",".join(entries) + "}" if entries else ""

    return {**rows, "tables": sorted((*row[:4], acl(row[4])) for row in rows["tables"])}


def _compare(connection: Connection, service: str) -> list[Any]:
    plain_sql = PLAIN_SQL_PER_TRUST.get(service, set())

    def include_name(name: str | None, type_: str, parents: Any) -> bool:
        if type_ == "schema":
            return name == service
        return not (type_ == "table" and (name == "alembic_version" or name in plain_sql))

    context = MigrationContext.configure(connection, opts={
        "include_schemas": True,
        "include_name": include_name,
        "compare_type": True,
        "compare_server_default": True,
        "target_metadata": DECLARED[service],
    })
    return list(compare_metadata(context, DECLARED[service]))  # type: ignore[arg-type]


@pytest.mark.parametrize("service", SERVICES)
async def test_the_migrated_schema_is_exactly_what_the_tables_declare(fresh: AsyncEngine, service: str) -> None:
    # `alembic check`, per service: tables.py and the migrations cannot drift apart.
    async with fresh.connect() as conn:
        diff = await conn.run_sync(_compare, service)
    assert diff == [], f"{service}: tables.py and its migrations disagree: {diff}"


async def test_the_migrated_audit_ledger_is_the_one_audit_tables_makes(fresh: AsyncEngine) -> None:
    # Tests and benchmarks make their throw-away ledgers with audit/tables.py; the migration
    # froze the same SQL. Made in a scratch schema and compared, names and all.
    scratch = f"audit_{uuid.uuid4().hex[:8]}"
    async with fresh.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{scratch}"'))
        for statement in audit_ledger(scratch):
            await conn.execute(text(statement))
        tenancy_statements = [s for table in AUDIT_TABLES for s in tenancy.row_level_security(scratch, table)]
        for statement in tenancy_statements:
            await conn.execute(text(statement))
        made = await catalog(conn, scratch)
        migrated = await catalog(conn, "reporting")
        await conn.execute(text(f'DROP SCHEMA "{scratch}" CASCADE'))

    def ledger(rows: dict[str, list[tuple[Any, ...]]], schema: str) -> set[str]:
        return {repr(row).replace(f"{schema}.", "S.").replace(f'"{schema}".', "S.")
                for kind, kind_rows in rows.items() for row in kind_rows
                if "audit" in repr(row) and kind != "sequences"}

    assert ledger(made, scratch) == ledger(owners_only(migrated, "reporting"), "reporting")


def _tables(service: str) -> list[Table]:
    return [table for metadata in DECLARED[service] for table in metadata.tables.values()]


@pytest.mark.parametrize("service", SERVICES)
def test_every_table_with_a_trust_id_declares_its_tenancy(service: str) -> None:
    silent = [t.name for t in _tables(service) if "trust_id" in t.c and tenancy.tenancy_of(t) is None]
    assert not silent, f"{service}: declare info=per_trust() or read_across_trusts(reason) on {silent}"


def _declared_per_trust(service: str) -> set[str]:
    return {t.name for t in tenancy.under_policy(_tables(service))} | PLAIN_SQL_PER_TRUST.get(service, set())


def _declared(service: str) -> set[str]:
    return {t.name for t in _tables(service) if tenancy.tenancy_of(t)} | PLAIN_SQL_PER_TRUST.get(service, set())


async def _reference_policy(engine: AsyncEngine) -> tuple[Any, ...]:
    """The policy as PostgreSQL keeps it, made by shared/tenancy.py on a scratch table."""
    scratch = f"policy_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{scratch}"'))
        await conn.execute(text(f'CREATE TABLE "{scratch}".t (trust_id uuid)'))
        for statement in tenancy.row_level_security(scratch, "t"):
            await conn.execute(text(statement))
        row = (await conn.execute(text(
            "SELECT policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies WHERE schemaname = :s"
        ), {"s": scratch})).one()
        await conn.execute(text(f'DROP SCHEMA "{scratch}" CASCADE'))
    return tuple(row)


def _per_table(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        tables.setdefault(row[0], []).append(tuple(row[1:]))
    return tables


@pytest.mark.parametrize("service", SERVICES)
async def test_the_databases_row_level_security_is_what_the_tables_declare(fresh: AsyncEngine, service: str) -> None:
    reference = await _reference_policy(fresh)
    async with fresh.connect() as conn:
        found = await catalog(conn, service)
    with_trust_id = {row[0] for row in found["columns"] if row[2] == "trust_id"}
    assert with_trust_id - _declared(service) == set(), "a table in the database with trust_id declares nothing"

    per_trust = _declared_per_trust(service)
    policies = _per_table(found["policies"])
    for name, _kind, enabled, forced, _acl in found["tables"]:
        if name in per_trust:
            assert (enabled, forced, policies.get(name)) == (True, True, [reference]), name
        else:
            assert (enabled, forced, policies.get(name)) == (False, False, None), name
    assert per_trust <= {row[0] for row in found["tables"]}
