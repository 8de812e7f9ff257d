"""Idempotency-Key and cursor pagination, the API kernel every service uses, on the real database."""

from __future__ import annotations

import asyncio
import types
import uuid
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy import text

from shared.api import (
    Cursor,
    IdempotencyKey,
    Page,
    PageSize,
    caller,
    decode_cursor,
    forget_old_stored_answers,
    page_of,
    requires,
    run_command,
)
from shared.auth import Auth, DevIssuer, Principal, Role, TokenVerifier
from shared.problems import install_problem_handlers
from shared.store.event_store import Checkpoint, EventStore
from shared.verified_tokens import VerifiedTokens
from tests.integration.kernel.helpers import SEALING, observation


class Rating(BaseModel):
    statement_id: str


@pytest.fixture
def api(engine, kernel, stack_settings, tmp_path):
    settings = stack_settings.model_copy(update={"state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json"})
    app = FastAPI()
    auth = Auth(TokenVerifier(settings))
    app.state.runtime = types.SimpleNamespace(auth=auth, verified_tokens=VerifiedTokens(auth.verifier))
    install_problem_handlers(app)
    store = EventStore(kernel, sealing=SEALING)

    @app.post("/ratings")
    async def record(rating: Rating, principal: Annotated[Principal, Depends(requires(Role.practitioner))],
                     key: IdempotencyKey = None):
        async with engine.begin() as conn:
            async def command(conn):  # type: ignore[no-untyped-def]
                event = observation(statement_id=rating.statement_id)
                await store.append(conn, f"pupil-{event.data.pupil_id}", [event])
                return 201, {"event_id": event.id}
            return await run_command(conn, kernel.idempotency, principal, key, rating, command)

    @app.get("/events")
    async def events(principal: Annotated[Principal, Depends(caller)], limit: PageSize = 50, cursor: Cursor = None) -> Page[int]:
        after = decode_cursor(cursor) or {}
        async with engine.connect() as conn:
            # What is committed now (a catch-up reader without `within` waits for the horizon,
            # which any long transaction on the server holds back).
            rows = await store.read_all(conn, Checkpoint(after.get("transaction_id", 0), after.get("position", 0)),
                                        limit=limit + 1, within=await store.snapshot(conn))
        page = page_of([r.checkpoint for r in rows], limit, lambda c: {"transaction_id": c.transaction_id,
                                                                       "position": c.position})
        return Page(items=[c.position for c in page.items], next_cursor=page.next_cursor)

    token = DevIssuer(settings).issue("staff-1", [Role.practitioner], uuid.uuid4(), [uuid.uuid4()])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"Authorization": f"Bearer {token}"}
    )


async def _events(engine, kernel) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".events'))


async def test_a_retried_command_returns_the_first_response_and_has_no_second_effect(api, engine, kernel):
    headers = {"Idempotency-Key": "rating-1"}
    first = await api.post("/ratings", json={"statement_id": "being.safe.1"}, headers=headers)
    again = await api.post("/ratings", json={"statement_id": "being.safe.1"}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert await _events(engine, kernel) == 1


async def test_concurrent_retries_with_one_key_have_one_effect(api, engine, kernel):
    responses = await asyncio.gather(
        *[api.post("/ratings", json={"statement_id": "being.safe.1"}, headers={"Idempotency-Key": "k"}) for _ in range(5)]
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["event_id"] for r in responses}) == 1
    assert await _events(engine, kernel) == 1


async def test_reusing_a_key_for_another_request_is_refused_and_changes_nothing(api, engine, kernel):
    await api.post("/ratings", json={"statement_id": "being.safe.1"}, headers={"Idempotency-Key": "k"})
    reused = await api.post("/ratings", json={"statement_id": "being.safe.2"}, headers={"Idempotency-Key": "k"})

    assert reused.status_code == 422 and reused.headers["content-type"] == "application/problem+json"
    assert await _events(engine, kernel) == 1


async def test_a_wrong_role_is_403_and_writes_nothing(api, engine, kernel, stack_settings, tmp_path):
    settings = stack_settings.model_copy(update={"state_dir": tmp_path})
    auditor = DevIssuer(settings).issue("dpo-1", [Role.auditor], uuid.uuid4())
    response = await api.post("/ratings", json={"statement_id": "x"}, headers={"Authorization": f"Bearer {auditor}"})
    assert response.status_code == 403 and await _events(engine, kernel) == 0


async def test_cursor_pages_walk_every_item_once(api):
    for n in range(7):
        await api.post("/ratings", json={"statement_id": f"being.safe.{n}"})
    seen, cursor = [], None
    while True:
        page = (await api.get("/events", params={"limit": 3, **({"cursor": cursor} if cursor else {})})).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and seen == sorted(set(seen))


async def test_a_forged_cursor_or_an_oversized_page_is_a_clear_400_or_422(api):
    forged = await api.get("/events", params={"cursor": "not-base64-json!"})
    oversized = await api.get("/events", params={"limit": 10_000})
    assert forged.status_code == 400 and "cursor" in forged.json()["detail"]
    assert oversized.status_code == 422


async def test_a_stored_answer_is_forgotten_after_its_retention_and_a_retry_then_runs_afresh(api, engine, kernel) -> None:  # type: ignore[no-untyped-def]
    """A stored answer may repeat personal data in clear (a plan's activities): the kernel's task in
    every service keeps it for idempotency_retention_s only (shared.api.forget_old_stored_answers)."""
    headers = {"Idempotency-Key": f"kept-{uuid.uuid4()}"}
    first = await api.post("/ratings", json={"statement_id": "being.safe.1"}, headers=headers)
    assert first.status_code == 201
    retried = await api.post("/ratings", json={"statement_id": "being.safe.1"}, headers=headers)
    assert retried.json() == first.json(), "within the retention a retry finds the stored answer"

    await asyncio.sleep(1.2)
    stop = asyncio.Event()
    task = asyncio.create_task(forget_old_stored_answers(engine, kernel.idempotency, 1.0, stop, every_s=0.1))
    async def kept() -> int:
        async with engine.connect() as conn:
            return int(await conn.scalar(text(f'SELECT count(*) FROM "{kernel.schema}".idempotency_keys '
                                              "WHERE key = :k"), {"k": headers["Idempotency-Key"]}) or 0)
    for _ in range(50):
        if not await kept():
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    assert await kept() == 0, "the stored answer outlived its retention"
    before = await _events(engine, kernel)
    again = await api.post("/ratings", json={"statement_id": "being.safe.1"}, headers=headers)
    assert again.status_code == 201 and again.json()["event_id"] != first.json()["event_id"]
    assert await _events(engine, kernel) == before + 1, "after the retention the command runs afresh"
