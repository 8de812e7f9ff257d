"""The planning API: suggestions, action plans (draft, issue, new versions, review, close) and the
session log, with the kernel's auth, problem+json errors, Idempotency-Key and cursor pages."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning import handlers
from services.planning.domain.plans import PlanContent
from services.planning.handlers import PlanningDeps, SessionIn
from services.planning.notes import open_texts, plan_field, session_field
from services.planning.tables import plans, sessions
from shared.api import Cursor, IdempotencyKey, Page, PageSize, cursor_position, page_of, requires, transact
from shared.audit import PersonalDataReads, ReadCategory, audit_reads
from shared.auth import Principal, Role, ensure_scope
from shared.events.planning import PlanKind
from shared.problems import NotFound
from shared.service import Runtime, current_runtime, dependencies_of

router = APIRouter(tags=["planning"])

Staff = Annotated[Principal, Depends(requires(Role.practitioner, Role.senco))]
Reader = Annotated[Principal, Depends(requires(Role.practitioner, Role.senco, Role.trust_admin, Role.dpo))]
Run = Annotated[Runtime, Depends(current_runtime)]


async def deps_of(request: Request) -> PlanningDeps:
    return dependencies_of(request).handlers  # type: ignore[no-any-return]


Deps = Annotated[PlanningDeps, Depends(deps_of)]


class FrequencyIn(BaseModel):
    sessions_per_week: int = Field(ge=1, le=10)
    minutes: int = Field(ge=5, le=240)
    setting: str = Field(min_length=1, max_length=40, examples=["one-to-one"])


class PlanIn(BaseModel):
    kind: PlanKind
    pupil_ids: list[UUID] = Field(default_factory=list, max_length=60)
    class_id: UUID | None = None
    academy_id: UUID | None = Field(default=None, description="Class plans only: the class's academy")
    strand: str = Field(min_length=1, max_length=40)
    targets: list[str] = Field(min_length=1, max_length=4, description="Statement ids of the strand, e.g. being.21")
    activities: list[Annotated[str, Field(max_length=200)]] = Field(min_length=1, max_length=20)
    frequency: FrequencyIn
    review_on: date

    def content(self) -> PlanContent:
        return PlanContent(self.kind, self.pupil_ids, self.class_id, self.strand, self.targets, self.activities,
                           self.frequency.sessions_per_week, self.frequency.minutes, self.frequency.setting,
                           self.review_on)


class IssueIn(BaseModel):
    practitioner_id: str = Field(min_length=1, max_length=200, pattern=r"\S",
                                 description="The named practitioner who issues the plan (their staff id)")


class RevisionIn(PlanIn, IssueIn):
    pass


class SessionBody(BaseModel):
    held_on: date
    minutes: int = Field(ge=1, le=600)
    pupils_present: list[UUID] | None = Field(default=None, description="Default: every pupil of the plan")
    staff_present: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=20)
    activities_done: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=20)
    note: str | None = Field(default=None, max_length=5000, description="Personal data: kept here, never in events")


def suggestion_out(suggestion: Any) -> dict[str, Any]:
    body = asdict(suggestion)
    body["frequency"]["text"] = suggestion.frequency.text
    body["issued"] = False  # a suggestion is advice: only a practitioner issues a plan
    return body


def _plain(value: Any) -> Any:
    """asyncpg's own UUID type as a plain one (the idempotency store serialises responses)."""
    if isinstance(value, UUID):
        return UUID(str(value))
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def plan_out(row: Any, deps: PlanningDeps) -> dict[str, Any]:
    """The plan as answered: its activities opened (sealed under its children's keys)."""
    activities = await open_texts(deps.notes.keyring, row.trust_id, row.activities, plan_field(row.plan_id, row.version))
    return {key: _plain(value) for key, value in _plan_fields(row, activities).items()}


def _plan_fields(row: Any, activities: list[str]) -> dict[str, Any]:
    return {
        "plan_id": row.plan_id, "version": row.version, "status": row.status, "kind": row.kind,
        "academy_id": row.academy_id, "pupil_ids": [UUID(str(p)) for p in row.pupil_ids], "class_id": row.class_id,
        "strand": row.strand, "framework_version": row.framework_version, "targets": row.targets,
        "activities": activities,
        "frequency": {"sessions_per_week": row.sessions_per_week, "minutes": row.session_minutes,
                      "setting": row.setting},
        "review_on": row.review_on, "practitioner_id": row.practitioner_id, "created_by": row.created_by,
        "created_at": row.created_at, "issued_at": row.issued_at, "percents_at_issue": row.percents_at_issue,
        "review": row.review, "closed_at": row.closed_at,
    }


async def command(runtime: Runtime, principal: Principal, key: str | None, body: Any, handle: Any) -> JSONResponse:
    return await transact(runtime.engine, runtime.spec.tables.idempotency, principal, key, body, handle)


# --- Suggestions ----------------------------------------------------------------------------------


@router.get("/pupils/{pupil_id}/suggestion", summary="The suggested next plan for a pupil, and why")
async def pupil_suggestion(pupil_id: UUID, principal: Reader, runtime: Run, deps: Deps) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        return suggestion_out(await handlers.pupil_suggestion(conn, deps, principal, pupil_id))


@router.get("/academies/{academy_id}/classes/{class_id}/suggestion",
            summary="Targets for a class's weakest needs from its screening, for PSHE planning")
async def class_suggestion(academy_id: UUID, class_id: UUID, principal: Reader, runtime: Run, deps: Deps) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        return suggestion_out(await handlers.class_suggestion(conn, deps, principal, academy_id, class_id))


# --- Plans ----------------------------------------------------------------------------------------


@router.post("/plans", status_code=201, summary="Draft an action plan (individual, group, class or home)")
async def draft_plan(body: PlanIn, principal: Staff, runtime: Run, deps: Deps, key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        plan_id = await handlers.draft_plan(conn, deps, principal, body.content(), body.academy_id)
        return 201, await plan_out(await handlers.current_plan(conn, principal, plan_id), deps)

    return await command(runtime, principal, key, body, handle)


@router.get("/plans", summary="Plans in the caller's scope, newest first; by pupil or academy")
async def list_plans(principal: Reader, runtime: Run, deps: Deps, pupil_id: UUID | None = None, academy_id: UUID | None = None,
                     limit: PageSize = 50, cursor: Cursor = None) -> Page[dict[str, Any]]:
    after = cursor_position(cursor, plan_id=UUID)
    query = select(plans).where(plans.c.trust_id == principal.trust_id,
                                plans.c.status != "superseded").order_by(plans.c.plan_id).limit(limit + 1)
    if not principal.trust_wide:
        query = query.where(plans.c.academy_id.in_(list(principal.academy_ids)))
    if academy_id is not None:
        query = query.where(plans.c.academy_id == academy_id)
    if pupil_id is not None:
        query = query.where(any_(plans.c.pupil_ids) == pupil_id)
    if after is not None:
        query = query.where(plans.c.plan_id > after["plan_id"])
    async with runtime.engine.connect() as conn:
        items = [await plan_out(row, deps) for row in await conn.execute(query)]
    return page_of(items, limit, lambda p: {"plan_id": str(p["plan_id"])})  # type: ignore[return-value]


@router.get("/plans/{plan_id}", summary="A plan's current version and every earlier version")
async def get_plan(plan_id: UUID, principal: Reader, runtime: Run, deps: Deps) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        current = await handlers.current_plan(conn, principal, plan_id)
        versions = (await conn.execute(select(plans).where(plans.c.plan_id == plan_id).order_by(plans.c.version))).all()
    return {**await plan_out(current, deps), "versions": [await plan_out(v, deps) for v in versions]}


@router.post("/plans/{plan_id}/issue", summary="Issue a draft plan: a named practitioner (PlanIssued)")
async def issue_plan(plan_id: UUID, body: IssueIn, principal: Staff, runtime: Run, deps: Deps,
                     key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        await handlers.issue_plan(conn, deps, principal, plan_id, body.practitioner_id.strip())
        return 200, await plan_out(await handlers.current_plan(conn, principal, plan_id), deps)

    return await command(runtime, principal, key, {"plan_id": str(plan_id), **body.model_dump()}, handle)


@router.post("/plans/{plan_id}/versions", status_code=201,
             summary="Change an issued plan: a new issued version (PlanIssued); the old one stays")
async def revise_plan(plan_id: UUID, body: RevisionIn, principal: Staff, runtime: Run, deps: Deps,
                      key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        await handlers.revise_plan(conn, deps, principal, plan_id, body.content(), body.practitioner_id.strip())
        return 201, await plan_out(await handlers.current_plan(conn, principal, plan_id), deps)

    return await command(runtime, principal, key, {"plan_id": str(plan_id), **body.model_dump(mode="json")}, handle)


@router.post("/plans/{plan_id}/review", summary="Review an issued plan against the latest scores (PlanReviewed)")
async def review_plan(plan_id: UUID, principal: Staff, runtime: Run, deps: Deps, key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        await handlers.review_plan(conn, deps, principal, plan_id)
        return 200, await plan_out(await handlers.current_plan(conn, principal, plan_id), deps)

    return await command(runtime, principal, key, {"review": str(plan_id)}, handle)


@router.post("/plans/{plan_id}/close", summary="Close a plan (PlanClosed): no more sessions")
async def close_plan(plan_id: UUID, principal: Staff, runtime: Run, deps: Deps, key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        await handlers.close_plan(conn, deps, principal, plan_id)
        return 200, await plan_out(await handlers.current_plan(conn, principal, plan_id), deps)

    return await command(runtime, principal, key, {"close": str(plan_id)}, handle)


# --- Sessions -------------------------------------------------------------------------------------


@router.post("/plans/{plan_id}/sessions", status_code=201, summary="Log a session of a plan (SessionLogged)")
async def log_session(plan_id: UUID, body: SessionBody, principal: Staff, runtime: Run, deps: Deps,
                      key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        session_id = await handlers.log_session(conn, deps, principal, plan_id, SessionIn(
            body.held_on, body.minutes, body.pupils_present, body.staff_present, body.activities_done, body.note))
        totals = await handlers.session_totals(conn, sessions.c.plan_id == plan_id)
        return 201, {"session_id": session_id, "plan_id": plan_id, "plan_totals": totals}

    return await command(runtime, principal, key, {"plan_id": str(plan_id), **body.model_dump(mode="json")}, handle)


async def session_out(row: Any, deps: PlanningDeps) -> dict[str, Any]:
    """The session as answered: its activities opened (sealed under its children's keys)."""
    done = await open_texts(deps.notes.keyring, row.trust_id, row.activities_done, session_field(row.session_id))
    return {key: _plain(value) for key, value in _session_fields(row, done).items()}


def _session_fields(row: Any, activities_done: list[str]) -> dict[str, Any]:
    return {"session_id": row.session_id, "plan_id": row.plan_id, "plan_version": row.plan_version,
            "held_on": row.held_on, "minutes": row.minutes, "pupil_ids": [UUID(str(p)) for p in row.pupil_ids],
            "staff_present": row.staff_ids, "activities_done": activities_done, "logged_by": row.logged_by}


@router.get("/plans/{plan_id}/sessions", summary="A plan's session log, oldest first, with totals")
async def plan_sessions(plan_id: UUID, principal: Reader, runtime: Run, deps: Deps, limit: PageSize = 50,
                        cursor: Cursor = None) -> dict[str, Any]:
    after = cursor_position(cursor, session_id=UUID)
    async with runtime.engine.connect() as conn:
        await handlers.current_plan(conn, principal, plan_id)
        query = select(sessions).where(sessions.c.plan_id == plan_id).order_by(sessions.c.session_id).limit(limit + 1)
        if after is not None:
            query = query.where(sessions.c.session_id > after["session_id"])
        items = [await session_out(r, deps) for r in await conn.execute(query)]
        totals = await handlers.session_totals(conn, sessions.c.plan_id == plan_id)
    page = page_of(items, limit, lambda s: {"session_id": str(s["session_id"])})
    return {"items": page.items, "next_cursor": page.next_cursor, "totals": totals}


@router.get("/plans/{plan_id}/session-totals", summary="Sessions, minutes and hours of contact time for a plan")
async def plan_totals(plan_id: UUID, principal: Reader, runtime: Run) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        await handlers.current_plan(conn, principal, plan_id)
        return {"plan_id": str(plan_id), **await handlers.session_totals(conn, sessions.c.plan_id == plan_id)}


@router.get("/pupils/{pupil_id}/session-totals", summary="Sessions, minutes and hours of contact time for a pupil")
async def pupil_totals(pupil_id: UUID, principal: Reader, runtime: Run) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        await handlers.pupil_in_scope(conn, principal, pupil_id)
        return {"pupil_id": str(pupil_id), **await handlers.session_totals(conn, any_(sessions.c.pupil_ids) == pupil_id)}


@router.get("/sessions/{session_id}/note", summary="A session's note (personal data)")
async def session_note(session_id: UUID, principal: Staff, runtime: Run, deps: Deps,
                       read: Annotated[PersonalDataReads, Depends(audit_reads)]) -> dict[str, Any]:
    async with runtime.engine.begin() as conn:
        row = (await conn.execute(select(sessions.c.trust_id, sessions.c.academy_id, sessions.c.pupil_ids).where(
            sessions.c.session_id == session_id))).first()
        if row is None or row.trust_id != principal.trust_id:
            raise NotFound(f"no session {session_id}")
        ensure_scope(principal, row.trust_id, row.academy_id)
        note = await deps.notes.get(conn, session_id)
        # The note is about every pupil of the session: one read each, in the transaction that read it.
        await read.record_many(conn, runtime.store, pupils=[(UUID(str(p)), row.academy_id) for p in row.pupil_ids],
                               trust_id=row.trust_id, data_categories=[ReadCategory.SESSION_NOTE])
        return {"session_id": str(session_id), "note": note}
