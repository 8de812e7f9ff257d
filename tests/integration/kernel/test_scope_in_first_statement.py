"""The tenant scope sent inside a transaction's first statement (an Idempotency-Key's claim carries
its `set_config`, shared.tenancy.scope_carrier) rather than in a round trip of its own: row-level
security is in effect for every later statement of that transaction, exactly as before."""

from __future__ import annotations

import uuid

from sqlalchemy import event, func, select, text

from services.assessment.tables import kernel
from shared.api import run_command
from shared.auth import Principal, Role
from shared.tenancy import SETTING, tenant_scope

IDEMPOTENCY = kernel.idempotency


async def _stored_answer(engine, trust_id: uuid.UUID, key: str) -> None:
    async with engine.begin() as conn:  # the system scope: any trust's row
        await conn.execute(IDEMPOTENCY.insert().values(trust_id=trust_id, subject="staff-1", key=key,
                                                       request_hash="x", status_code=201, response={}))


async def test_a_claim_carrying_the_scope_leaves_the_rest_of_the_transaction_in_it(engine):
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    their_key = f"theirs-{uuid.uuid4()}"
    await _stored_answer(engine, theirs, their_key)
    await _stored_answer(engine, ours, f"ours-{uuid.uuid4()}")
    principal = Principal("staff-1", frozenset({Role.senco}), ours)
    sent: list[str] = []

    def on_statement(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    seen: dict[str, object] = {}

    async def command(conn):
        seen["scope"] = await conn.scalar(text("SELECT current_setting(:s, true)"), {"s": SETTING})
        seen["trusts"] = set((await conn.execute(select(IDEMPOTENCY.c.trust_id).distinct())).scalars())
        seen["their row"] = await conn.scalar(select(func.count()).where(IDEMPOTENCY.c.key == their_key))
        # A write naming the other trust is refused by the policy's check, too.
        try:
            async with conn.begin_nested():
                await conn.execute(IDEMPOTENCY.insert().values(trust_id=theirs, subject="x", key="forged",
                                                               request_hash="x", status_code=0, response={}))
            seen["forged"] = "written"
        except Exception as error:  # noqa: BLE001 - the policy's refusal is what we look for
            seen["forged"] = type(error).__name__
        return 201, {}

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    try:
        with tenant_scope(ours):
            async with engine.begin() as conn:
                response = await run_command(conn, IDEMPOTENCY, principal, f"k-{uuid.uuid4()}", {"a": 1}, command)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)

    assert response.status_code == 201
    assert sent[0].lstrip().startswith("INSERT INTO") and "set_config" in sent[0], sent[0]
    assert not any(s.lstrip().startswith("SELECT set_config") for s in sent), "no round trip of its own"
    assert seen["scope"] == str(ours)
    assert seen["trusts"] == {ours}, "another trust's rows are invisible after the claim"
    assert seen["their row"] == 0
    assert seen["forged"] != "written"


async def test_a_transaction_whose_first_statement_does_not_carry_it_sets_the_scope_first(engine):
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    await _stored_answer(engine, theirs, f"theirs-{uuid.uuid4()}")
    with tenant_scope(ours):
        async with engine.begin() as conn:
            trusts = set((await conn.execute(select(IDEMPOTENCY.c.trust_id).distinct())).scalars())
    assert trusts <= {ours}
