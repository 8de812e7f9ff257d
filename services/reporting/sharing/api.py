"""Sharing's HTTP API (docs/sharing.md)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.reporting.sharing.core import Sharing, _agency_body
from services.reporting.sharing.tables import agencies, attempts, deliveries
from services.reporting.tables import kernel
from shared.api import Cursor, IdempotencyKey, Page, PageSize, decode_cursor, page_of, requires, run_command
from shared.audit import AdminAction, record_admin_action
from shared.auth import Principal, Role, ensure_scope
from shared.events.consent import AgencyCategory, DataKind
from shared.problems import BadRequest, NotFound
from shared.service import Runtime, dependencies_of, runtime_of

SHARERS = (Role.senco, Role.dpo, Role.trust_admin)
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
Sharer = Annotated[Principal, Depends(requires(*SHARERS))]


def sharing_of(request: Request) -> Sharing:
    """The reporting service's Sharing, as its bootstrap built it."""
    return dependencies_of(request).sharing  # type: ignore[no-any-return]


SharingDep = Annotated[Sharing, Depends(sharing_of)]


class AgencyIn(BaseModel):
    category: AgencyCategory
    # The organisation's name (never a person's): the audit ledger records it with every share,
    # so it may hold no quotes, backslashes or control characters.
    organisation: str = Field(min_length=1, max_length=200, pattern=r'^[^"\\\x00-\x1f\x7f]+$')
    endpoint_url: str = Field(min_length=1, max_length=2000)


class ShareIn(BaseModel):
    agency_id: UUID
    pupil_id: UUID
    document_kind: DataKind
    document_id: UUID | None = None
    document: dict[str, Any] | None = Field(default=None, description="The content disclosed (the report, plan or profile)")


class AttemptOut(BaseModel):
    attempt_id: int
    delivery_id: UUID
    attempt: int
    scheduled_for: str
    attempted_at: str
    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: int | None


def sharing_router() -> APIRouter:
    router = APIRouter(prefix="/sharing", tags=["sharing"])

    @router.post("/agencies", status_code=201, summary="Register an agency recipient; its signing secret is shown this once")
    async def register(body: AgencyIn, runtime: RuntimeDep, sharing: SharingDep, principal: Sharer) -> JSONResponse:
        # No Idempotency-Key here on purpose: a stored response would keep the secret.
        async with runtime.engine.begin() as conn:
            created = await sharing.register_agency(conn, runtime, principal, body.category.value,
                                                    body.organisation, body.endpoint_url)
            await record_admin_action(conn, runtime.store, principal, AdminAction.AGENCY_REGISTERED,
                                      trust_id=principal.trust_id, target_kind="agency",
                                      target_id=str(created["agency_id"]), details={"category": body.category.value})
        return JSONResponse(status_code=201, content=_json(created), headers={"Cache-Control": "no-store"})

    @router.get("/agencies", summary="The trust's agency recipients (never their secrets)")
    async def list_agencies(runtime: RuntimeDep, principal: Sharer) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(select(agencies).where(agencies.c.trust_id == principal.trust_id)
                                       .order_by(agencies.c.registered_at))).all()
        return {"items": [_agency_body(r.agency_id, r.category, r.organisation, r.endpoint_url, r.registered_at, r.active)
                          for r in rows]}

    @router.post("/shares", status_code=201, summary="Share a report, plan or profile with an agency, if consent allows")
    async def share(body: ShareIn, runtime: RuntimeDep, sharing: SharingDep, principal: Sharer,
                    idempotency_key: IdempotencyKey = None) -> JSONResponse:
        async def command(conn: Any) -> tuple[int, Any]:
            return await sharing.share(conn, runtime, principal, body.agency_id, body.pupil_id,
                                       body.document_kind.value, body.document_id, body.document)

        async with runtime.engine.begin() as conn:
            return await run_command(conn, kernel.idempotency, principal, idempotency_key,
                                     body.model_dump(mode="json"), command)

    @router.get("/deliveries/{delivery_id}", summary="One webhook delivery and where it stands")
    async def delivery(delivery_id: UUID, runtime: RuntimeDep, principal: Sharer) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            row = (await conn.execute(select(deliveries).where(
                deliveries.c.trust_id == principal.trust_id, deliveries.c.delivery_id == delivery_id))).first()
        if row is None:
            raise NotFound("no such delivery")
        ensure_scope(principal, row.trust_id, row.academy_id)
        # FastAPI's encoder, not orjson: the row's keys and ids are subclasses of str and UUID
        # (SQLAlchemy's column names, asyncpg's UUID), which orjson refuses.
        return jsonable_encoder({k: v for k, v in row._mapping.items() if k != "payload"})  # type: ignore[no-any-return]

    @router.post("/deliveries/{delivery_id}/replay", summary="Send a dead-lettered delivery again (consent is asked again)")
    async def replay(delivery_id: UUID, runtime: RuntimeDep, sharing: SharingDep, principal: Sharer) -> dict[str, Any]:
        async with runtime.engine.begin() as conn:
            return _json(await sharing.replay(conn, runtime, principal, delivery_id))

    @router.get("/agencies/{agency_id}/deliveries", summary="The delivery log of an agency's endpoint: every try, newest first")
    async def delivery_log(agency_id: UUID, runtime: RuntimeDep, sharing: SharingDep, principal: Sharer,
                           limit: PageSize = 50, cursor: Cursor = None) -> Page[AttemptOut]:
        position = decode_cursor(cursor)
        async with runtime.engine.connect() as conn:
            if await sharing.agency(conn, principal.trust_id, agency_id) is None:
                raise NotFound("no such agency")
            query = (select(attempts).join(deliveries, deliveries.c.delivery_id == attempts.c.delivery_id)
                     .where(attempts.c.trust_id == principal.trust_id, attempts.c.agency_id == agency_id)
                     .order_by(attempts.c.attempt_id.desc()).limit(limit + 1))
            if not principal.trust_wide:
                query = query.where(deliveries.c.academy_id.in_(principal.academy_ids))
            if position is not None:
                if not isinstance(position.get("id"), int):
                    raise BadRequest("the cursor is not one this API issued")
                query = query.where(attempts.c.attempt_id < position["id"])
            rows = (await conn.execute(query)).all()
        items = [AttemptOut(attempt_id=r.attempt_id, delivery_id=r.delivery_id, attempt=r.attempt,
                            scheduled_for=r.scheduled_for.isoformat(), attempted_at=r.attempted_at.isoformat(),
                            outcome=r.outcome, status_code=r.status_code, error=r.error, duration_ms=r.duration_ms)
                 for r in rows]
        return page_of(items, limit, lambda item: {"id": item.attempt_id})

    return router


def _json(body: dict[str, Any]) -> Any:
    from shared.api import _jsonable

    return _jsonable(body)
