"""A command's transaction tried again where the database says it may be (shared.api.transact):

* a pooled connection that dies without its socket saying so (here: a TCP proxy in front of the
  real PostgreSQL drops the connection the moment the client next writes) fails the transaction's
  first statement; the command runs once more on a fresh connection and is applied once;
* the connection dies after the COMMIT reached the server, before its answer came back: with an
  Idempotency-Key the second try answers with the first one's stored response (applied once);
  without one the error stands rather than risk applying the command twice;
* two commands that deadlock: PostgreSQL rolls one back (40P01) and it is tried again, so both land.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.assessment.tables import kernel
from shared.api import transact
from shared.auth import Principal, Role
from shared.settings import Settings
from shared.store.db import create_engine
from shared.tenancy import tenant_scope

IDEMPOTENCY = kernel.idempotency
TRUST = uuid.uuid4()
PRINCIPAL = Principal("staff-retries", frozenset({Role.senco}), TRUST)


class CuttingProxy:
    """Forwards TCP to PostgreSQL. `cut(when)`: the next client write containing `when` (any write,
    by default) ends that connection — before forwarding it (`after=False`) or just after (the
    server acts on it, the client never hears back)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.pattern: bytes | None = None
        self.after = False
        self.cuts = 0
        self.server: asyncio.Server | None = None

    def cut(self, when: bytes = b"", *, after: bool = False) -> None:
        self.pattern, self.after = when, after

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        muted = asyncio.Event()  # the server's answers stop reaching the client

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.pattern is not None and self.pattern in data:
                    self.pattern = None
                    self.cuts += 1
                    muted.set()
                    if self.after:
                        server_w.write(data)
                        await server_w.drain()
                        await asyncio.sleep(0.2)  # the server acts on it
                    client_w.transport.abort()
                    server_w.transport.abort()
                    return
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if muted.is_set():
                    return
                client_w.write(data)
                await client_w.drain()

        # Whichever side ends first ends the connection: the client waits for the server to close
        # after its Terminate, as the server waits for the client.
        pumps = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
        _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pending:
            pump.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*pending)
        client_w.transport.abort()
        server_w.transport.abort()


@pytest.fixture
async def proxied(stack_settings: Settings, engine: AsyncEngine) -> AsyncIterator[tuple[CuttingProxy, AsyncEngine]]:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS retry_effects (id uuid PRIMARY KEY, note text)"))
    url = engine.url
    proxy = CuttingProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    through = stack_settings.model_copy(
        update={"database_url": url.set(port=port).render_as_string(hide_password=False)})
    service = create_engine(through, pool_size=1)
    try:
        yield proxy, service
    finally:
        await service.dispose()
        await proxy.stop()


async def _effects(engine: AsyncEngine, note: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM retry_effects WHERE note = :n"), {"n": note}))


def _insert(note: str, tries: list[int]):
    async def command(conn):
        tries.append(1)
        await conn.execute(text("INSERT INTO retry_effects VALUES (:id, :n)"), {"id": uuid.uuid4(), "n": note})
        return 201, {"note": note}
    return command


async def _warm(service: AsyncEngine) -> None:
    async with service.connect() as conn:  # one pooled connection, alive
        await conn.execute(text("SELECT 1"))


async def test_a_connection_dead_at_the_first_statement_is_replaced_and_the_command_applied_once(proxied, engine):
    proxy, service = proxied
    await _warm(service)
    note, tries = f"dead-first-{uuid.uuid4()}", []
    proxy.cut()  # the pooled connection dies at its next write; its socket said nothing before
    with tenant_scope(TRUST):
        response = await transact(service, IDEMPOTENCY, PRINCIPAL, None, {}, _insert(note, tries))
    assert proxy.cuts == 1
    assert response.status_code == 201
    assert await _effects(engine, note) == 1
    assert len(tries) == 2, "the first try died at its first statement, the second ran on a fresh connection"


async def test_a_commit_whose_answer_is_lost_is_answered_from_the_idempotency_record(proxied, engine):
    proxy, service = proxied
    await _warm(service)
    note, tries, key = f"lost-commit-{uuid.uuid4()}", [], f"k-{uuid.uuid4()}"
    proxy.cut(b"COMMIT", after=True)  # the server commits; the client never hears so
    with tenant_scope(TRUST):
        response = await transact(service, IDEMPOTENCY, PRINCIPAL, key, {"n": note}, _insert(note, tries))
    assert proxy.cuts == 1
    assert response.status_code == 201
    assert response.headers.get("Idempotent-Replayed") == "true", "the second try found the first's answer"
    assert len(tries) == 1 and await _effects(engine, note) == 1, "applied once"


async def test_without_a_key_a_lost_commit_is_an_error_not_a_second_application(proxied, engine):
    proxy, service = proxied
    await _warm(service)
    note, tries = f"lost-commit-nokey-{uuid.uuid4()}", []
    proxy.cut(b"COMMIT", after=True)
    with tenant_scope(TRUST), pytest.raises(DBAPIError):
        await transact(service, IDEMPOTENCY, PRINCIPAL, None, {}, _insert(note, tries))
    assert len(tries) == 1
    assert await _effects(engine, note) == 1, "committed once by the server; never run again"


async def test_two_commands_that_deadlock_both_land(engine):
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS retry_counters (id text PRIMARY KEY, n int NOT NULL)"))
        a, b = f"a-{uuid.uuid4()}", f"b-{uuid.uuid4()}"
        await conn.execute(text("INSERT INTO retry_counters VALUES (:a, 0), (:b, 0)"), {"a": a, "b": b})
    both_hold_one = asyncio.Barrier(2)
    tries: list[str] = []

    def crossing(first: str, second: str, name: str):
        async def command(conn):
            tries.append(name)
            await conn.execute(text("UPDATE retry_counters SET n = n + 1 WHERE id = :id"), {"id": first})
            if tries.count(name) == 1:  # the first try of each meets the other's lock
                await asyncio.wait_for(both_hold_one.wait(), 10)
            await conn.execute(text("UPDATE retry_counters SET n = n + 1 WHERE id = :id"), {"id": second})
            return 201, {}
        return command

    with tenant_scope(TRUST):
        results = await asyncio.gather(
            transact(engine, IDEMPOTENCY, PRINCIPAL, None, {}, crossing(a, b, "one")),
            transact(engine, IDEMPOTENCY, PRINCIPAL, None, {}, crossing(b, a, "two")),
        )
    assert [r.status_code for r in results] == [201, 201]
    assert len(tries) == 3, "one of the two was rolled back by the deadlock and tried again"
    async with engine.connect() as conn:
        counts = dict((await conn.execute(text("SELECT id, n FROM retry_counters WHERE id IN (:a, :b)"),
                                          {"a": a, "b": b})).all())
    assert counts == {a: 2, b: 2}, "each command applied exactly once"
