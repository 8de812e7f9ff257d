"""The tenant scope of database work: which trust's rows a transaction may see, enforced by
PostgreSQL row-level security on every tenant table (see docs/security.md).

Inside an HTTP request every transaction on a service's engine starts by telling PostgreSQL its
scope (`flourish.trust_id`, transaction-local): NOBODY until the caller is authenticated, then the
caller's trust, so a handler's query without a trust filter still returns only that trust's rows.
Everything else is the system scope and says nothing: consumers, the outbox relay, background
tasks, migrations, CLIs and rebuilds legitimately span trusts. SYSTEM may also be entered
explicitly, for the rare request-path read that must look across trusts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar, Token
from typing import Any
from uuid import UUID

from sqlalchemy import MetaData, Table, event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

SETTING = "flourish.trust_id"
SYSTEM = "system"
# Inside a request before the caller is known: a scope that matches no trust (the nil UUID).
NOBODY = "00000000-0000-0000-0000-000000000000"
POLICY = "tenant_scope"

# None: nobody said, which is the system scope without a statement to set it.
_scope: ContextVar[str | None] = ContextVar("flourish_tenant_scope", default=None)


def current_scope() -> str:
    return _scope.get() or SYSTEM


def enter_scope(scope: UUID | str) -> Token[str | None]:
    """Set the scope for the rest of this task (and tasks it starts); `reset_scope` undoes it."""
    return _scope.set(str(scope))


def reset_scope(token: Token[str | None]) -> None:
    _scope.reset(token)


@contextmanager
def tenant_scope(scope: UUID | str) -> Iterator[None]:
    """Work done inside sees only the rows of trust `scope` (or every trust's, for SYSTEM)."""
    token = enter_scope(scope)
    try:
        yield
    finally:
        reset_scope(token)


# A statement's execution option: it sets the transaction's scope itself (`scope_carrier`), so the
# separate `set_config` round trip is not sent before it.
CARRIES_SCOPE = "flourish_carries_scope"
_PENDING = "flourish_scope_pending"


def scope_transactions(engine: AsyncEngine) -> None:
    """Make every transaction on `engine` set its tenant scope before its first statement runs:
    in a statement of its own, or inside the first statement itself when that one carries it."""
    event.listen(engine.sync_engine, "begin", _begin)
    event.listen(engine.sync_engine, "before_cursor_execute", _before_statement)


def _begin(conn: Connection) -> None:
    # The scope is owed to the transaction's first statement. is_local=true, so it ends with the
    # transaction and a pooled connection carries nothing over. The system scope costs no
    # statement: consumers and the relay pay nothing for this.
    scope = _scope.get()
    if scope is None:
        conn.info.pop(_PENDING, None)
    else:
        conn.info[_PENDING] = scope


def _before_statement(conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                      executemany: bool) -> None:
    scope = conn.info.pop(_PENDING, None)
    if scope is None:
        return
    if context is not None and context.execution_options.get(CARRIES_SCOPE):
        return  # the statement sets the scope itself, before it reads any tenant row
    conn.execute(text("SELECT set_config(:name, :scope, true)"), {"name": SETTING, "scope": scope})


def scope_carrier() -> Any:
    """A one-row FROM item that sets the transaction's scope to the current one, for the first
    statement of a transaction to carry (executed with `execution_options(CARRIES_SCOPE=True)`):
    one round trip fewer. Only for a statement whose own rows do not depend on the scope (the
    scope may be applied after PostgreSQL read them): an insert of the caller's own row (an
    Idempotency-Key's claim). Every later statement of the transaction runs in the scope
    (tests/integration/kernel/test_scope_in_first_statement.py)."""
    return select(func.set_config(SETTING, current_scope(), True).label("scope")).subquery("_scope")


@asynccontextmanager
async def across_trusts(conn: AsyncConnection) -> AsyncIterator[None]:
    """Inside a request's transaction, look across trusts for a moment: for an ownership check
    ("which trust owns this academy / pupil's key?"), which by its nature must see every trust's
    rows, and after which the handler refuses what is not the caller's."""
    await conn.execute(text("SELECT set_config(:name, :scope, true)"), {"name": SETTING, "scope": SYSTEM})
    try:
        yield
    finally:
        await conn.execute(text("SELECT set_config(:name, :scope, true)"), {"name": SETTING, "scope": current_scope()})


def is_policy_violation(error: BaseException) -> bool:
    """A write the tenant policy refused: a row of another trust than the transaction's scope."""
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlstate", None) == "42501" and "row-level security" in str(orig)


class TenantScopeMiddleware:
    """Pure ASGI: each HTTP request starts in the NOBODY scope; `shared.api.caller` widens it to the
    authenticated caller's trust. So a handler that touches the database without knowing its
    caller sees no tenant rows rather than every trust's."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = enter_scope(NOBODY)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_scope(token)


# --- Declarations ----------------------------------------------------------------------------

# A table says its tenancy once, where it is declared (tables.py, the kernel's tables, a migration's
# op.create_table): `Table(..., info=per_trust())`. The policy statements are derived from those
# declarations, and tests/integration/schema checks that every table with a trust_id column says
# which it is and that the database's policies are what the declarations say.
TENANCY = "tenancy"
PER_TRUST = "per_trust"
ACROSS_TRUSTS = "across_trusts"


def per_trust() -> dict[str, str]:
    """A table's `info`: each row is one trust's, and the tenant policy (below) guards it."""
    return {TENANCY: PER_TRUST}


def read_across_trusts(reason: str) -> dict[str, str]:
    """A table's `info`: it carries trust_id but is read across trusts by design, so it has no
    policy; the reason is part of the declaration, for the reader."""
    return {TENANCY: ACROSS_TRUSTS, "reason": reason}


def tenancy_of(table: Table) -> str | None:
    """PER_TRUST, ACROSS_TRUSTS, or None for a table that declared nothing."""
    return table.info.get(TENANCY)


def under_policy(tables: MetaData | Iterable[Table]) -> list[Table]:
    """The tables (of a MetaData, or given) declared per trust, in name order."""
    candidates = tables.tables.values() if isinstance(tables, MetaData) else tables
    return sorted((t for t in candidates if tenancy_of(t) == PER_TRUST), key=lambda t: (t.schema or "", t.name))


def row_level_security_statements(tables: MetaData | Iterable[Table]) -> list[str]:
    """The ENABLE, FORCE and POLICY statements for every table declared per trust."""
    statements: list[str] = []
    for table in under_policy(tables):
        if table.schema is None or "trust_id" not in table.c:
            raise ValueError(f"{table.name}: a table under the tenant policy names its schema and has trust_id")
        statements += row_level_security(table.schema, table.name)
    return statements


# --- The policy ---------------------------------------------------------------------------------

# Unset ('' once set and reset in a session, NULL before) is the system scope: the services
# connect as the tables' owner, who could switch the policy off anyway, so failing closed for a
# connection that never says would stop our own tools (audit verification, exports, benchmarks)
# without stopping an attacker. What RLS guards against is a request handler's bug.
_CONDITION = (
    f"CASE coalesce(current_setting('{SETTING}', true), '') "
    f"WHEN '' THEN true WHEN '{SYSTEM}' THEN true "
    f"ELSE trust_id = current_setting('{SETTING}', true)::uuid END"
)


def row_level_security(schema: str, table: str) -> list[str]:
    """The statements that put `schema.table` (which has a trust_id column) under the tenant
    policy. FORCE: the services connect as the tables' owner, whom RLS otherwise exempts."""
    name = f'"{schema}"."{table}"'
    return [
        f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {POLICY} ON {name}",
        f"CREATE POLICY {POLICY} ON {name} USING ({_CONDITION}) WITH CHECK ({_CONDITION})",
    ]


def enable(schema: str, tables: Iterable[str]) -> None:
    """For a migration's upgrade() of tables made in plain SQL (the audit ledger): the tenant policy
    on each of `tables`. Tables made with op.create_table declare per_trust() and go through
    shared.store.migrations.apply_tenancy instead."""
    from alembic import op

    for table in tables:
        for statement in row_level_security(schema, table):
            op.execute(statement)
