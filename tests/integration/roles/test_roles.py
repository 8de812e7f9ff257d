"""Issue 14 item 1, roles: each service's role holds exactly the declared privilege matrix
(shared/store/privileges.py, from each service's MetaData and the ledger's PRIVILEGES), owns
nothing, and — attacked with its own credentials, as the issue's adversary would — PostgreSQL
refuses it every way of rewriting the audit ledger. Checked on a database the migrations built
from nothing and on one at the heads before roles existed (the schema test's snapshot), upgraded
by the migration step."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import make_url

from flourish.local.postgres import ensure_service_logins, role_database_url, service_database_url
from services.reporting.audit.tables import PRIVILEGES as LEDGER
from services.reporting.readmodels.rebuild import rebuild
from services.reporting.readmodels.tables import NAMES as READ_MODELS
from shared.settings import Settings
from shared.store import privileges
from shared.store.db import create_engine
from tests.conftest import database_of_its_own
from tests.integration.schema.test_schema_once import DECLARED, SERVICES, TODAYS_HEADS, _catalogs, _migrate, _snapshot

pytestmark = pytest.mark.infra

ALL_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
PLAIN = {"reporting": LEDGER}


def declared(service: str) -> dict[str, frozenset[str]]:
    return privileges.matrix(DECLARED[service], PLAIN.get(service))


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module", params=["fresh", "upgraded"])
async def database(request: pytest.FixtureRequest, stack_settings: Settings) -> AsyncIterator[Settings]:
    """A database migrated by the migration step (as the owner): built from nothing, or upgraded
    from the snapshot of the heads before roles existed."""
    with database_of_its_own(stack_settings, f"roles_{request.param}") as settings:
        engine = create_engine(settings, pool_size=2)
        try:
            if request.param == "upgraded":
                conn = await asyncpg.connect(_dsn(settings.database_url))
                try:
                    role, version = await conn.fetchrow(
                        "SELECT quote_ident(current_user), current_setting('server_version_num')::int")
                    await conn.execute(_snapshot(role, version))
                finally:
                    await conn.close()
                before = await _catalogs(engine)
                assert {s: before[f"{s} versions"] for s in SERVICES} == TODAYS_HEADS
            await _migrate(engine, settings)
        finally:
            await engine.dispose()
        ensure_service_logins(settings, SERVICES)
        yield settings


async def test_each_service_role_holds_exactly_the_declared_matrix_and_owns_nothing(database: Settings) -> None:
    conn = await asyncpg.connect(_dsn(database.database_url))
    try:
        for service in SERVICES:
            role = privileges.service_role(service)
            granted: dict[str, set[str]] = {}
            for row in await conn.fetch(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = $1 AND table_schema = $2", role, service):
                granted.setdefault(row["table_name"], set()).add(row["privilege_type"])
            assert granted == {t: set(p) for t, p in declared(service).items()}, service

            # has_table_privilege counts PUBLIC's grants and memberships too: nothing beyond the matrix.
            tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", service)
            for (table,) in tables:
                held = {p for p in ALL_TABLE_PRIVILEGES
                        if await conn.fetchval("SELECT has_table_privilege($1, $2, $3)", role,
                                               f'"{service}"."{table}"', p)}
                assert held == set(declared(service).get(table, ())), (service, table)

            assert await conn.fetchval("SELECT has_schema_privilege($1, $2, 'USAGE')", role, service)
            assert not await conn.fetchval("SELECT has_schema_privilege($1, $2, 'CREATE')", role, service)
            owned = await conn.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND pg_get_userbyid(c.relowner) = $2", service, role)
            assert owned == [], (service, owned)
            attributes = await conn.fetchrow(
                "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles "
                "WHERE rolname = $1", role)
            assert tuple(attributes) == (False, False, False, False, True), service
            # It is no member of the owner (whose privileges it would then use).
            assert not await conn.fetchval("SELECT pg_has_role($1, current_user, 'USAGE')", role)
    finally:
        await conn.close()


# What the adversary with the reporting service's credentials tries; each must be refused.
ATTACKS = {
    "disable the append-only trigger":
        "ALTER TABLE reporting.audit_entries DISABLE TRIGGER audit_entries_append_only",
    "disable every trigger": "ALTER TABLE reporting.audit_entries DISABLE TRIGGER ALL",
    "rewrite an entry": "UPDATE reporting.audit_entries SET body = '{\"fact\": {}}'",
    "delete an entry": "DELETE FROM reporting.audit_entries",
    "truncate the ledger": "TRUNCATE reporting.audit_entries",
    "delete the checkpoints": "DELETE FROM reporting.audit_checkpoints",
    "rewrite a checkpoint": "UPDATE reporting.audit_checkpoints SET signature = 'x'",
    "drop the ledger": "DROP TABLE reporting.audit_entries",
    "replace the trigger's function": "CREATE OR REPLACE FUNCTION reporting.audit_refuse_change() RETURNS trigger "
                                      "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    "switch row-level security off": "ALTER TABLE reporting.audit_entries DISABLE ROW LEVEL SECURITY",
    "skip every trigger (replication role)": "SET session_replication_role = replica",
    "take ownership": "ALTER TABLE reporting.audit_entries OWNER TO flourish_reporting",
    "create a table in the schema": "CREATE TABLE reporting.audit_entries_copy (x int)",
}


async def test_the_reporting_role_cannot_rewrite_the_ledger(database: Settings) -> None:
    service = await asyncpg.connect(_dsn(service_database_url(database, "reporting")))
    try:
        assert await service.fetchval("SELECT current_user") == "flourish_reporting"
        # What it may do: append an entry (and read it back).
        await service.execute(
            "INSERT INTO reporting.audit_entries (trust_id, seq, prev_hash, entry_hash, body) "
            "VALUES (gen_random_uuid(), 1, repeat('0', 64), repeat('a', 64), '{\"fact\": {\"kind\": \"read\"}}')")
        allowed = []
        for attack, statement in ATTACKS.items():
            try:
                await service.execute(statement)
                allowed.append(attack)
            except asyncpg.InsufficientPrivilegeError:
                pass
        assert allowed == []

        # GRANT by a non-owner is not an error in PostgreSQL: it warns and grants nothing.
        warnings: list[str] = []
        service.add_log_listener(lambda _conn, message: warnings.append(str(message)))
        await service.execute("GRANT UPDATE, DELETE, TRUNCATE ON reporting.audit_entries TO flourish_reporting")
        await service.execute("GRANT ALL ON reporting.audit_checkpoints TO PUBLIC")
        for table in ("audit_entries", "audit_checkpoints"):
            for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
                assert not await service.fetchval(
                    "SELECT has_table_privilege(current_user, $1, $2)", f"reporting.{table}", privilege)
        assert any("no privileges were granted" in warning for warning in warnings), warnings

        assert await service.fetchval("SELECT count(*) FROM reporting.audit_entries") == 1
        triggers = await service.fetch(
            "SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = 'reporting.audit_entries'::regclass "
            "AND NOT tgisinternal")
        assert [(t["tgname"], t["tgenabled"]) for t in triggers] == [("audit_entries_append_only", "O")]
    finally:
        await service.close()


async def test_row_level_security_binds_a_service_role(database: Settings) -> None:
    """Not the tables' owner, the role is bound by the tenant policy: in a trust's scope it sees that
    trust's entries only (the FORCE was for the owner; tests/isolation covers the services)."""
    owner = await asyncpg.connect(_dsn(database.database_url))
    service = await asyncpg.connect(_dsn(service_database_url(database, "reporting")))
    try:
        trusts = [await owner.fetchval("SELECT gen_random_uuid()") for _ in range(2)]
        for number, trust in enumerate(trusts, start=100):
            await owner.execute(
                "INSERT INTO reporting.audit_entries (trust_id, seq, prev_hash, entry_hash, body) "
                "VALUES ($1, $2, repeat('0', 64), repeat('b', 64), '{\"fact\": {}}')", trust, number)
        async with service.transaction():
            await service.execute("SELECT set_config('flourish.trust_id', $1, true)", str(trusts[0]))
            seen = {r["trust_id"] for r in await service.fetch("SELECT trust_id FROM reporting.audit_entries")}
        assert seen == {trusts[0]}
    finally:
        await owner.close()
        await service.close()


async def test_the_rebuild_role_owns_the_read_models_only_and_cannot_touch_the_ledger(database: Settings) -> None:
    rebuild_role = privileges.rebuild_role("reporting")
    owner = await asyncpg.connect(_dsn(database.database_url))
    try:
        owned = {r["relname"] for r in await owner.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND pg_get_userbyid(c.relowner) = $1 AND n.nspname = 'reporting'", rebuild_role)}
        assert owned == set(READ_MODELS)
        for table in LEDGER:
            held = [p for p in ALL_TABLE_PRIVILEGES
                    if await owner.fetchval("SELECT has_table_privilege($1, $2, $3)", rebuild_role, f"reporting.{table}", p)]
            assert held == [], (table, held)
    finally:
        await owner.close()
    rebuild = await asyncpg.connect(_dsn(role_database_url(database, rebuild_role)))
    try:
        allowed = []
        for attack, statement in ATTACKS.items():
            if attack == "create a table in the schema":
                continue  # it may: that is how it makes shadow tables
            try:
                await rebuild.execute(statement)
                allowed.append(attack)
            except asyncpg.InsufficientPrivilegeError:
                pass
        assert allowed == []
    finally:
        await rebuild.close()


async def test_a_rebuild_as_the_rebuild_role_swaps_in_tables_the_service_role_can_still_use(
    database: Settings, topic_prefix: str
) -> None:
    as_rebuild = database.model_copy(update={
        "database_url": role_database_url(database, privileges.rebuild_role("reporting")),
        "topic_prefix": topic_prefix})
    await rebuild(as_rebuild)
    conn = await asyncpg.connect(_dsn(database.database_url))
    try:
        for table in READ_MODELS:
            held = {p for p in ALL_TABLE_PRIVILEGES if await conn.fetchval(
                "SELECT has_table_privilege('flourish_reporting', $1, $2)", f"reporting.{table}", p)}
            assert held == set(privileges.READ_WRITE), table
        # The service role cannot rebuild: it cannot make tables, nor become the rebuild role.
        service = await asyncpg.connect(_dsn(service_database_url(database, "reporting")))
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await service.execute("CREATE TABLE reporting.rm_pupils_shadow (x int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await service.execute("SET ROLE flourish_reporting_rebuild")
        finally:
            await service.close()
    finally:
        await conn.close()
