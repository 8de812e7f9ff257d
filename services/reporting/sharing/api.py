"""Sharing's HTTP API (docs/sharing.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.reporting.rendering import render
from services.reporting.sharing.core import Sharing, _agency_body
from services.reporting.sharing.notices import Status, Withhold, WithholdReason, view
from services.reporting.sharing.tables import agencies, attempts, deliveries
from services.reporting.tables import kernel
from shared.api import Cursor, IdempotencyKey, Page, PageSize, decode_cursor, page_of, requires, transact
from shared.audit import AdminAction, record_admin_action
from shared.auth import Principal, Role, ensure_scope
from shared.events.consent import AgencyCategory, DataKind
from shared.problems import BadRequest, Conflict, Forbidden, NotFound
from shared.service import Runtime, current_runtime, dependencies_of

SHARERS = (Role.senco, Role.dpo, Role.trust_admin)
# Who may register, re-point, rotate and deactivate agencies: never a SENCo.
AGENCY_ADMINS = (Role.dpo, Role.trust_admin)
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
Sharer = Annotated[Principal, Depends(requires(*SHARERS))]
AgencyAdmin = Annotated[Principal, Depends(requires(*AGENCY_ADMINS))]
Officer = Annotated[Principal, Depends(requires(Role.dpo, Role.trust_admin))]


async def sharing_of(request: Request) -> Sharing:
    """The reporting service's Sharing, as its bootstrap built it."""
    return dependencies_of(request).sharing  # type: ignore[no-any-return]


SharingDep = Annotated[Sharing, Depends(sharing_of)]


class AgencyIn(BaseModel):
    category: AgencyCategory
    # The organisation's name (never a person's): the audit ledger records it with every share,
    # so it may hold no quotes, backslashes or control characters.
    organisation: str = Field(min_length=1, max_length=200, pattern=r'^[^"\\\x00-\x1f\x7f]+$')
    endpoint_url: str = Field(min_length=1, max_length=2000)


class EndpointIn(BaseModel):
    endpoint_url: str = Field(min_length=1, max_length=2000)


class WithholdIn(BaseModel):
    """The DPO's decision that telling the family of this share would put the child at risk."""

    reason_code: WithholdReason
    reason: str = Field(min_length=1, max_length=4000, description="Why, in the officer's words (sealed at rest)")


class ShareIn(BaseModel):
    """A share names what to send, never its content: the platform assembles the document itself
    for the pupil named (sharing/documents.py). Any other field (a `document`) is refused."""

    model_config = ConfigDict(extra="forbid")

    agency_id: UUID
    pupil_id: UUID
    document_kind: DataKind
    document_id: UUID = Field(description="report, profile: one of the pupil's assessments (the document as of it); "
                                          "action_plan: one of the pupil's plans")
    withhold_family_notice: WithholdIn | None = Field(
        default=None, description="Data-protection officer only, and only for a share under a lawful basis other "
                                  "than consent: the family is not told, and the audit ledger records why")


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

    @router.post("/agencies", status_code=201,
                 summary="DPO or trust admin: register an agency recipient; its signing secret is shown this once, "
                         "and its endpoint is sent a signed endpoint.verification event it must answer with a 2xx")
    async def register(body: AgencyIn, runtime: RuntimeDep, sharing: SharingDep, principal: AgencyAdmin) -> JSONResponse:
        # No Idempotency-Key here on purpose: a stored response would keep the secret.
        async with runtime.engine.begin() as conn:
            created = await sharing.register_agency(conn, runtime, principal, body.category.value,
                                                    body.organisation, body.endpoint_url)
            await record_admin_action(conn, runtime.store, principal, AdminAction.AGENCY_REGISTERED,
                                      trust_id=principal.trust_id, target_kind="agency",
                                      target_id=str(created["agency_id"]), details={"category": body.category.value})
        verification = await sharing.verify_agency(runtime, principal, created["agency_id"])
        return JSONResponse(status_code=201, content=_json({**created, "verification": verification,
                                                            "verified": verification["verified"]}),
                            headers={"Cache-Control": "no-store"})

    @router.get("/agencies", summary="The trust's agency recipients (never their secrets)")
    async def list_agencies(runtime: RuntimeDep, principal: Sharer) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(select(agencies).where(agencies.c.trust_id == principal.trust_id)
                                       .order_by(agencies.c.registered_at))).all()
        return {"items": [{**_agency_body(r.agency_id, r.category, r.organisation, r.endpoint_url, r.registered_at,
                                          r.active),
                           "verified": r.verified_at is not None, "verified_at": r.verified_at,
                           "deactivated_at": r.deactivated_at, "rotation_overlap_until": r.previous_secret_until}
                          for r in rows]}

    @router.post("/agencies/{agency_id}/verification",
                 summary="DPO or trust admin: send the endpoint a signed endpoint.verification event again; "
                         "a 2xx answer verifies it")
    async def verify(agency_id: UUID, runtime: RuntimeDep, sharing: SharingDep, principal: AgencyAdmin) -> dict[str, Any]:
        return _json(await sharing.verify_agency(runtime, principal, agency_id))

    @router.put("/agencies/{agency_id}/endpoint",
                summary="DPO or trust admin: move the agency to a new endpoint, unverified until it answers "
                        "the signed endpoint.verification event")
    async def change_endpoint(agency_id: UUID, body: EndpointIn, runtime: RuntimeDep, sharing: SharingDep,
                              principal: AgencyAdmin) -> dict[str, Any]:
        async with runtime.engine.begin() as conn:
            changed = await sharing.change_endpoint(conn, runtime, principal, agency_id, body.endpoint_url)
            await record_admin_action(conn, runtime.store, principal, AdminAction.AGENCY_ENDPOINT_CHANGED,
                                      trust_id=principal.trust_id, target_kind="agency", target_id=str(agency_id))
        verification = await sharing.verify_agency(runtime, principal, agency_id)
        return _json({**changed, "verification": verification, "verified": verification["verified"]})

    @router.post("/agencies/{agency_id}/secret-rotation",
                 summary="DPO or trust admin: a new signing secret (shown this once); the previous one still signs "
                         "beside it for the overlap (FLOURISH_SHARING_ROTATION_OVERLAP_S, 24 h by default)")
    async def rotate(agency_id: UUID, runtime: RuntimeDep, sharing: SharingDep, principal: AgencyAdmin) -> JSONResponse:
        async with runtime.engine.begin() as conn:
            rotated = await sharing.rotate_secret(conn, principal, agency_id)
            await record_admin_action(conn, runtime.store, principal, AdminAction.AGENCY_SECRET_ROTATED,
                                      trust_id=principal.trust_id, target_kind="agency", target_id=str(agency_id))
        return JSONResponse(content=_json(rotated), headers={"Cache-Control": "no-store"})

    @router.post("/agencies/{agency_id}/deactivation",
                 summary="DPO or trust admin: the agency receives nothing further (pending shares are stopped), "
                         "except deletion notices for what it already holds")
    async def deactivate(agency_id: UUID, runtime: RuntimeDep, sharing: SharingDep,
                         principal: AgencyAdmin) -> dict[str, Any]:
        async with runtime.engine.begin() as conn:
            done = await sharing.deactivate_agency(conn, principal, agency_id)
            await record_admin_action(conn, runtime.store, principal, AdminAction.AGENCY_DEACTIVATED,
                                      trust_id=principal.trust_id, target_kind="agency", target_id=str(agency_id),
                                      details={"shares_stopped": str(done["shares_stopped"])})
        return _json(done)

    @router.post("/shares", status_code=201, summary="Share a report, plan or profile with an agency, if consent allows")
    async def share(body: ShareIn, runtime: RuntimeDep, sharing: SharingDep, principal: Sharer,
                    idempotency_key: IdempotencyKey = None) -> JSONResponse:
        withhold = None
        if body.withhold_family_notice is not None:
            if not principal.has_role(Role.dpo):
                raise Forbidden("only the data-protection officer may withhold the family's notice of a share")
            withhold = Withhold(body.withhold_family_notice.reason_code, body.withhold_family_notice.reason)

        async def command(conn: Any) -> tuple[int, Any]:
            return await sharing.share(conn, runtime, principal, body.agency_id, body.pupil_id,
                                       body.document_kind.value, body.document_id, withhold)

        return await transact(runtime.engine, kernel.idempotency, principal, idempotency_key,
                              body.model_dump(mode="json"), command)

    @router.get("/shares/{share_id}/notice",
                summary="The family's notice of a share (what, to whom, why, on which basis): a printable letter")
    async def family_notice(share_id: UUID, request: Request, runtime: RuntimeDep, sharing: SharingDep,
                            principal: Sharer, format: Literal["html", "json"] | None = None) -> Any:
        if sharing.notices is None:
            raise NotFound("notices to families are not kept by this service")
        async with runtime.engine.connect() as conn:
            row = await sharing.notices.notice_of(conn, principal.trust_id, share_id)
        if row is None:
            raise NotFound("no notice for this share (it was not accepted, or is not this trust's)")
        ensure_scope(principal, row.trust_id, row.academy_id)
        if row.status == Status.WITHHELD:
            raise Conflict("the data-protection officer withheld this notice: the family is not told of this share")
        notice = view(row, sharing.notices.config.sender_name)
        if (format or ("json" if "application/json" in request.headers.get("accept", "") else "html")) == "json":
            return notice.as_json()
        return HTMLResponse(render("family_notice.html", notice=notice,
                                   by_email=row.status in (Status.QUEUED, Status.SENT),
                                   sent=row.status == Status.SENT),
                            headers={"Cache-Control": "no-store"})

    @router.post("/shares/{share_id}/notice/withholding",
                 summary="DPO: withhold the family's notice of a share (safeguarding basis) not sent yet")
    async def withhold_notice(share_id: UUID, body: WithholdIn, runtime: RuntimeDep, sharing: SharingDep,
                              principal: Annotated[Principal, Depends(requires(Role.dpo))]) -> dict[str, Any]:
        if sharing.notices is None:
            raise NotFound("notices to families are not kept by this service")
        async with runtime.engine.begin() as conn:
            return _json(await sharing.notices.withhold(conn, principal, share_id,
                                                        Withhold(body.reason_code, body.reason)))

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

    @router.post("/deliveries/{delivery_id}/replay",
                 summary="Send a dead-lettered or undeliverable delivery again (consent is asked again); DPO or trust admin")
    async def replay(delivery_id: UUID, runtime: RuntimeDep, sharing: SharingDep, principal: Officer) -> dict[str, Any]:
        async with runtime.engine.begin() as conn:
            return _json(await sharing.replay(conn, runtime, principal, delivery_id))

    @router.get("/undeliverable",
                summary="Deletion notices agencies' endpoints cannot take (disabled, or dead-lettered): send them another way")
    async def undeliverable(runtime: RuntimeDep, sharing: SharingDep, principal: Officer) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            return jsonable_encoder({"items": await sharing.undeliverable(conn, principal)})  # type: ignore[no-any-return]

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
