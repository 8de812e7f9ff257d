"""Issue 9 item 4, the database half: PostgreSQL row-level security on every tenant table, so a
handler's query that forgets its trust filter still returns only the caller's trust's rows. The
tables come from the catalog; the query runs in a real HTTP request of a running service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, Request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.reporting.readmodels.rebuild import rebuild
from shared.api import caller
from shared.auth import Principal
from shared.tenancy import NOBODY, SYSTEM, tenant_scope
from tests.isolation.conftest import ALL_ROLES, SCHEMAS, World, tenant_tables

# Tables trust A's data leaves empty; every other tenant table must hold some of A's rows, so that
# "B sees none of them" is not vacuous.
EMPTY_FOR_A = {
    "consent.retention_expiries": "nothing of A's has expired",
    "assessment.retention_clock_outbox": "delivered to consent and deleted",
    "reporting.rm_plan_reviews": "A's plan is not reviewed",
    "reporting.rm_plan_closures": "A's plan is not closed",
    "reporting.audit_checkpoints": "signed on the checkpointer's own schedule",
}


def _forgetful_router() -> APIRouter:
    """A handler with the bug RLS is for: it reads a whole table, no trust filter."""
    router = APIRouter()

    @router.get("/test-only/rows/{schema}/{table}")
    async def every_row(schema: str, table: str, request: Request,
                        principal: Annotated[Principal, Depends(caller)]) -> list[str]:
        return await _trust_ids(request, schema, table)

    @router.get("/test-only/anonymous-rows/{schema}/{table}")
    async def every_row_unauthenticated(schema: str, table: str, request: Request) -> list[str]:
        return await _trust_ids(request, schema, table)

    return router


async def _trust_ids(request: Request, schema: str, table: str) -> list[str]:
    assert schema in SCHEMAS and table.isidentifier()  # the test's own names, never user input
    # Each schema read by its own service's engine, as its own role: a service reaches no other's.
    async with request.app.state.schema_engines[schema].connect() as conn:
        rows = (await conn.execute(text(f'SELECT * FROM "{schema}"."{table}"'))).mappings().all()
    return [str(row["trust_id"]) for row in rows]


async def test_every_tenant_table_is_under_a_forced_policy_and_survives_a_rebuild(world: World) -> None:
    engine = world.platform.apps["reporting"].state.runtime.engine
    tables = await tenant_tables(engine)
    assert {t.schema for t in tables} == set(SCHEMAS) and len(tables) >= 40
    unprotected = [f"{t.schema}.{t.name}" for t in tables if not (t.enabled and t.forced and t.policies == 1)]
    assert not unprotected, f"tenant tables without a forced row-level security policy: {unprotected}"

    # A rebuild of the read models swaps in tables it made: they must carry the policy too. It runs
    # as the CLI does (the owner's URL, SET ROLE to the rebuild role): the service's own role
    # cannot rebuild (tests/integration/roles).
    # The events are sealed: the rebuild opens them with reporting's keyring.
    result = await rebuild(world.platform.settings, keyring=world.platform.apps["reporting"].state.runtime.sealing.keyring)
    assert result.events > 0
    rebuilt = [t for t in await tenant_tables(engine) if t.name.startswith("rm_")]
    assert len(rebuilt) == 9 and all(t.enabled and t.forced and t.policies == 1 for t in rebuilt)


async def test_a_query_without_a_trust_filter_in_a_request_returns_only_the_callers_trust(world: World) -> None:
    platform, a = world.platform, world.a
    app = platform.apps["reporting"]
    app.state.schema_engines = {schema: platform.apps[schema].state.runtime.engine for schema in SCHEMAS}
    app.include_router(_forgetful_router())
    client = platform.clients["reporting"]
    trust_b = uuid.uuid4()
    as_b = platform.token(ALL_ROLES, trust_b, [uuid.uuid4(), a.academy_id], "intruder-b")
    tables = await tenant_tables(app.state.runtime.engine)
    a_id, problems, checked = str(a.trust_id), [], 0
    for table in tables:
        name = f"{table.schema}.{table.name}"
        path = f"/test-only/rows/{table.schema}/{table.name}"
        seen_by_a = (await client.get(path, headers=world.headers_a)).json()
        seen_by_b = (await client.get(path, headers=as_b)).json()
        anonymous = (await client.get(f"/test-only/anonymous-rows/{table.schema}/{table.name}")).json()
        if set(seen_by_a) - {a_id} or set(seen_by_b) - {str(trust_b)} or anonymous:
            problems.append(f"{name}: A saw {set(seen_by_a)}, B saw {set(seen_by_b)}, nobody saw {len(anonymous)}")
        if not seen_by_a and name not in EMPTY_FOR_A:
            problems.append(f"{name}: none of A's rows to hide; fill it in the fixture or list it in EMPTY_FOR_A")
        checked += bool(seen_by_a)
    assert not problems, "\n".join(problems)
    assert checked >= len(tables) - len(EMPTY_FOR_A)

    # The same tables in the system scope (consumers, relay, CLIs): every trust's rows.
    with tenant_scope(SYSTEM):
        async with app.state.runtime.engine.connect() as conn:
            trusts = await conn.scalar(text('SELECT count(DISTINCT trust_id) FROM "reporting"."rm_pupils" '
                                            'WHERE trust_id IN (:a, :b)'), {"a": a.trust_id, "b": trust_b})
    assert trusts == 1  # A's, seen from no request at all


async def test_writing_another_trusts_row_in_a_request_scope_is_refused(world: World) -> None:
    engine = world.platform.apps["consent"].state.runtime.engine
    row: dict[str, Any] = {"c": "assessments", "t": world.a.trust_id, "a": world.a.academy_id}
    statement = text("UPDATE consent.retention_policies SET set_by = set_by "
                     "WHERE trust_id = :t AND academy_id = :a AND data_category = :c")
    with tenant_scope(uuid.uuid4()):
        async with engine.begin() as conn:
            assert (await conn.execute(statement, row)).rowcount == 0
    with tenant_scope(NOBODY):
        async with engine.begin() as conn:
            assert (await conn.execute(statement, row)).rowcount == 0
    with tenant_scope(world.a.trust_id):
        async with engine.begin() as conn:
            assert (await conn.execute(statement, row)).rowcount == 1

    # And a row written for another trust than the scope's is refused outright.
    insert = text("INSERT INTO consent.retention_policies (academy_id, data_category, trust_id, policy_id, counted_from,"
                  " period_years, period_months, period_days, set_by, set_at)"
                  " VALUES (:a, 'action_plans', :t, :p, 'leaving_date', 1, 0, 0, 'intruder', now())")
    with tenant_scope(uuid.uuid4()), pytest.raises(DBAPIError, match="row-level security"):
        async with engine.begin() as conn:
            await conn.execute(insert, {**row, "p": uuid.uuid4()})
