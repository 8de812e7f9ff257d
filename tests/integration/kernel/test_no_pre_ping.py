"""No ping per checkout (shared/store/db.py): a pooled connection the server closed under us (a
PostgreSQL restart, a terminated backend) is found closed at checkout without a round trip and
replaced, so the next request's transaction runs on a live one at its first try."""

from __future__ import annotations

import asyncio

from sqlalchemy import event, text

from shared.store.db import create_engine


async def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout(stack_settings, engine):
    service = create_engine(stack_settings, pool_size=2)
    try:
        async with service.connect() as conn:
            killed = await conn.scalar(text("SELECT pg_backend_pid()"))
        async with engine.begin() as admin:
            assert await admin.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
        await asyncio.sleep(0.5)  # the terminated backend's socket closes; the event loop sees it

        statements: list[str] = []
        event.listen(service.sync_engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: statements.append(statement))
        async with service.begin() as conn:
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert pid != killed, "a fresh connection, not the closed one"
        assert statements == ["SELECT pg_backend_pid()"], "no ping, no retry: one statement"
    finally:
        await service.dispose()
