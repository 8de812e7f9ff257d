"""The assessment service's HTTP API: parse, authorise, call a handler, shape the response.

Commands run in one transaction each, once per Idempotency-Key (shared.api.run_command); lists
are cursor-paginated (shared.api.Page). Every record is scope-checked against the trust and academy
it is stored under (scope.py); reads are in queries.py, bodies in schemas.py, class profiles in
profiles.py; errors are problem+json (app.py maps the domain's exceptions).

Longer than ~400 lines on purpose: it is the service's one router, some thirty routes of a few
lines each over four areas (frameworks, roster, observations, assessments). Split by area, every
part would repeat the role aliases and dependencies above, and "which file holds this route" would
have four answers instead of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment import handlers, opt_out, queries, roster_handlers
from services.assessment.domain.errors import UnknownFrameworkVersion
from services.assessment.domain.framework import framework_json_schema, parse_framework
from services.assessment.domain.observations import Rating
from services.assessment.domain.screening import ClassProfile, progress
from services.assessment.framework_store import SAMPLE_VERSION, FrameworkSummary
from services.assessment.profiles import profile_of
from services.assessment.schemas import (
    AcademyOut,
    AssessmentOut,
    AssessmentStartIn,
    BulkObservationsIn,
    ClassOut,
    CompletedOut,
    CorrectionIn,
    GroupIn,
    GroupOut,
    ImportOut,
    LeftOut,
    NameIn,
    ObservationIn,
    ObservationOut,
    PupilAttributesOut,
    PupilOut,
    PupilSummary,
    RecordedOut,
    ScreeningAssessment,
    ScreeningOut,
    StartedAssessment,
    StartedOut,
    completed_out,
    score_out,
)
from services.assessment.scope import (
    academy_in_scope,
    assessment_in_scope,
    class_in_scope,
    group_in_scope,
    pupil_in_scope,
    screening_in_scope,
)
from shared.api import Cursor, IdempotencyKey, Page, PageSize, caller, cursor_position, page_of, requires, transact
from shared.audit import AdminAction, PersonalDataReads, ReadCategory, audit_reads, record_admin_action
from shared.auth import Principal, Role
from shared.internal import INTERNAL, service_client
from shared.limits import MIB, body_limit
from shared.problems import NotFound, UnprocessableEntity
from shared.service import Runtime, current_runtime, dependencies_of

router = APIRouter()

STAFF = (Role.practitioner, Role.senco, Role.trust_admin)
OBSERVERS = (Role.practitioner, Role.senco)
ROSTER_KEEPERS = (Role.senco, Role.trust_admin)
TENANCY_ADMINS = (Role.trust_admin, Role.admin)
FRAMEWORK_LOADERS = (Role.trust_admin, Role.admin)
# A 10,000-pupil MIS export (domain.roster.MAX_ROWS) of ~300-byte rows is 3 MB.
MAX_ROSTER_BYTES = 5 * MIB
MAX_FRAMEWORK_BYTES = 2 * MIB
# MAX_RATINGS ratings of ~250 bytes each, with room for notes on most of them.
MAX_BULK_OBSERVATIONS_BYTES = 4 * MIB

Staff = Annotated[Principal, Depends(requires(*STAFF))]
# A DPO answers subject-access requests. Flourish services read no names, dates of birth or UPNs:
# the reporting service reads gender and year group from GET /pupils/{id}/attributes.
PupilReader = Annotated[Principal, Depends(requires(*STAFF, Role.dpo))]
# The service clients that read a pupil's attributes (the reporting service's report).
ATTRIBUTE_READERS = ("reporting",)
AttributeReader = Annotated[Principal, Depends(service_client(lambda request: ATTRIBUTE_READERS))]
Observer = Annotated[Principal, Depends(requires(*OBSERVERS))]
RosterKeeper = Annotated[Principal, Depends(requires(*ROSTER_KEEPERS))]
TenancyAdmin = Annotated[Principal, Depends(requires(*TENANCY_ADMINS))]
FrameworkLoader = Annotated[Principal, Depends(requires(*FRAMEWORK_LOADERS))]
AnyCaller = Annotated[Principal, Depends(caller)]


async def context_of(request: Request) -> handlers.Context:
    """The handlers' context, as app.bootstrap built it (with the process's keyring and blind index)."""
    return dependencies_of(request).context  # type: ignore[no-any-return]


Ctx = Annotated[handlers.Context, Depends(context_of)]
Run = Annotated[Runtime, Depends(current_runtime)]
Handler = Callable[[AsyncConnection], Awaitable[tuple[int, Any]]]


async def command(runtime: Runtime, principal: Principal, key: str | None, body: Any, handle: Handler) -> JSONResponse:
    """Run a command in its own transaction, once per Idempotency-Key."""
    return await transact(runtime.engine, runtime.spec.tables.idempotency, principal, key, body, handle)


# --- Frameworks ---------------------------------------------------------------------------------


@router.get("/framework-schema", tags=["frameworks"], summary="The JSON Schema a framework document must satisfy")
async def get_framework_schema(principal: AnyCaller) -> dict[str, Any]:
    return framework_json_schema()


@router.post(
    "/frameworks", tags=["frameworks"], status_code=201,
    responses={200: {"description": "This version was already loaded with the same content"}},
    summary="Load a framework version (YAML or JSON body): admin for every trust, trust_admin for the trust",
    openapi_extra=body_limit(MAX_FRAMEWORK_BYTES, requestBody={
        "content": {"application/yaml": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}},
        "required": True}),
)
async def load_framework(
    request: Request, principal: FrameworkLoader, runtime: Run, ctx: Ctx, key: IdempotencyKey = None
) -> JSONResponse:
    body = await _required_body(request)
    framework = parse_framework(body)

    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        outcome = await handlers.load_framework(conn, ctx, principal, framework)
        status = 201 if outcome == "created" else 200
        if outcome != "unchanged":  # audited in the transaction that loads it
            await record_admin_action(
                conn, runtime.store, principal, AdminAction.FRAMEWORK_LOADED, trust_id=principal.trust_id,
                target_kind="framework", target_id=framework.version,
                details={"outcome": str(outcome), "content_hash": framework.content_hash,
                         "scope": "platform" if principal.has_role(Role.admin) else "trust"})
        return status, {"version": framework.version, "content_hash": framework.content_hash, "outcome": outcome}

    return await command(runtime, principal, key, {"sha256": hashlib.sha256(body).hexdigest()}, handle)


@router.get("/frameworks", tags=["frameworks"], summary="Framework versions this trust can use")
async def list_frameworks(principal: AnyCaller, runtime: Run, ctx: Ctx, limit: PageSize = 50,
                          cursor: Cursor = None) -> Page[FrameworkSummary]:
    after = (cursor_position(cursor, version=str) or {}).get("version")
    async with runtime.engine.connect() as conn:
        items = await ctx.frameworks.summaries(conn, principal.trust_id, after, limit + 1)
    return page_of(items, limit, lambda f: {"version": f.version})


@router.get("/frameworks/{version}", tags=["frameworks"], summary="A framework version's content")
async def get_framework(version: str, principal: AnyCaller, runtime: Run, ctx: Ctx) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        try:
            framework = await ctx.frameworks.get(conn, principal.trust_id, version)
        except UnknownFrameworkVersion as error:
            raise NotFound(str(error)) from None
    return {**framework.document.model_dump(mode="json"), "content_hash": framework.content_hash}


# --- Tenancy and roster ------------------------------------------------------------------------


@router.put("/trust", tags=["roster"], summary="Name the caller's trust")
async def name_trust(body: NameIn, principal: TenancyAdmin, runtime: Run, key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        await roster_handlers.register_trust(conn, principal, body.name)
        return 200, {"trust_id": principal.trust_id, "name": body.name}

    return await command(runtime, principal, key, body, handle)


@router.put("/academies/{academy_id}", tags=["roster"], response_model=AcademyOut,
            responses={201: {"model": AcademyOut, "description": "Registered"}},
            summary="Register (or rename) an academy of the caller's trust, by the id its tokens carry")
async def register_academy(academy_id: UUID, body: NameIn, principal: TenancyAdmin, runtime: Run,
                           key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        created = await roster_handlers.register_academy(conn, principal, academy_id, body.name)
        return (201 if created else 200), AcademyOut(academy_id=academy_id, trust_id=principal.trust_id, name=body.name)

    return await command(runtime, principal, key, {"academy_id": academy_id, **body.model_dump()}, handle)


@router.get("/academies", tags=["roster"], summary="The academies in the caller's scope")
async def list_academies(principal: AnyCaller, runtime: Run, limit: PageSize = 50, cursor: Cursor = None) -> Page[AcademyOut]:
    after = (cursor_position(cursor, academy_id=UUID) or {}).get("academy_id")
    reachable = None if principal.trust_wide else principal.academy_ids
    async with runtime.engine.connect() as conn:
        rows = await queries.academies_after(conn, principal.trust_id, reachable, after, limit + 1)
    items = [AcademyOut(academy_id=r.academy_id, trust_id=r.trust_id, name=r.name) for r in rows]
    return page_of(items, limit, lambda a: {"academy_id": str(a.academy_id)})


@router.post(
    "/academies/{academy_id}/roster-imports", tags=["roster"], response_model=ImportOut,
    summary="Import an MIS pupil export (CSV body); see docs/assessment.md for the accepted columns",
    openapi_extra=body_limit(
        MAX_ROSTER_BYTES, requestBody={"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    ),
)
async def import_roster(
    academy_id: UUID, request: Request, principal: RosterKeeper, runtime: Run, ctx: Ctx,
    whole_roll: Annotated[bool, Query(description="The file is the academy's whole roll: pupils it omits have left")] = False,
    key: IdempotencyKey = None,
) -> JSONResponse:
    data = await _required_body(request)

    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        report = await roster_handlers.import_roster(conn, ctx, principal, academy_id, data, whole_roll)
        return 200, ImportOut(**dataclasses.asdict(report))

    body = {"academy_id": academy_id, "whole_roll": whole_roll, "sha256": hashlib.sha256(data).hexdigest()}
    return await command(runtime, principal, key, body, handle)


@router.get("/academies/{academy_id}/classes", tags=["roster"], summary="An academy's classes (registration groups)")
async def list_classes(
    academy_id: UUID, principal: Staff, runtime: Run, limit: PageSize = 50, cursor: Cursor = None
) -> Page[ClassOut]:
    after = (cursor_position(cursor, name=str) or {}).get("name")
    async with runtime.engine.connect() as conn:
        await academy_in_scope(conn, principal, academy_id)
        rows = await queries.classes_after(conn, academy_id, after, limit + 1)
    items = [ClassOut(class_id=r.class_id, academy_id=r.academy_id, name=r.name) for r in rows]
    return page_of(items, limit, lambda c: {"name": c.name})


@router.get("/classes/{class_id}/pupils", tags=["roster"], summary="The pupils on roll in a class")
async def list_class_pupils(class_id: UUID, principal: Staff, runtime: Run, ctx: Ctx,
                            read: Annotated[PersonalDataReads, Depends(audit_reads)], limit: PageSize = 50,
                            cursor: Cursor = None) -> Page[PupilSummary]:
    after = (cursor_position(cursor, pupil_id=UUID) or {}).get("pupil_id")
    async with runtime.engine.begin() as conn:
        owner = await class_in_scope(conn, principal, class_id)
        rows = await queries.class_pupils_after(conn, class_id, after, limit + 1)
        details = await ctx.personal.details(conn, [p.pupil_id for p in rows])
        # One read per pupil whose name this page shows.
        await read.record_many(conn, runtime.store, pupils=[(p.pupil_id, owner.academy_id) for p in rows[:limit]
                                                            if p.pupil_id in details],
                               trust_id=owner.trust_id, data_categories=[ReadCategory.CLASS_LIST])
    items = [
        PupilSummary(pupil_id=p.pupil_id, class_id=p.class_id, on_roll=p.on_roll,
                     name=details[p.pupil_id].display_name if p.pupil_id in details else None,
                     year_group=details[p.pupil_id].year_group if p.pupil_id in details else None)
        for p in rows
    ]
    return page_of(items, limit, lambda p: {"pupil_id": str(p.pupil_id)})


@router.get("/pupils/{pupil_id}", tags=["roster"], response_model=PupilOut, summary="A pupil's roster record and personal data")
async def get_pupil(pupil_id: UUID, principal: PupilReader, runtime: Run, ctx: Ctx,
                    read: Annotated[PersonalDataReads, Depends(audit_reads)]) -> PupilOut:
    async with runtime.engine.begin() as conn:
        pupil = await pupil_in_scope(conn, principal, pupil_id, personal=True)
        details = (await ctx.personal.details(conn, [pupil_id])).get(pupil_id)
        # Every read of a pupil's personal data is audited, in the transaction that reads it.
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=[ReadCategory.ROSTER_PERSONAL_DATA])
    personal = dataclasses.asdict(details) if details else {}
    return PupilOut(**dataclasses.asdict(pupil), **personal)


@router.get("/pupils/{pupil_id}/attributes", tags=["roster"], response_model=PupilAttributesOut,
            dependencies=[INTERNAL],
            summary="A pupil's gender and year group, for the reporting service's anonymised report (internal)")
async def pupil_attributes(pupil_id: UUID, principal: AttributeReader, runtime: Run, ctx: Ctx,
                           read: Annotated[PersonalDataReads, Depends(audit_reads)]) -> PupilAttributesOut:
    async with runtime.engine.begin() as conn:
        pupil = await pupil_in_scope(conn, principal, pupil_id, personal=True)
        details = (await ctx.personal.details(conn, [pupil_id])).get(pupil_id)
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=[ReadCategory.PUPIL_ATTRIBUTES])
    return PupilAttributesOut(pupil_id=pupil_id, academy_id=pupil.academy_id,
                              gender=details.gender if details else None,
                              year_group=details.year_group if details else None)


@router.post("/academies/{academy_id}/groups", tags=["roster"], status_code=201, response_model=GroupOut,
             summary="Put pupils of the academy in a group (a nurture group, a screening group)")
async def create_group(academy_id: UUID, body: GroupIn, principal: Observer, runtime: Run,
                       key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        group_id = await roster_handlers.create_group(conn, principal, academy_id, body.name, body.pupil_ids)
        return 201, GroupOut(group_id=group_id, academy_id=academy_id, name=body.name,
                             pupil_ids=list(dict.fromkeys(body.pupil_ids)))

    return await command(runtime, principal, key, {"academy_id": academy_id, **body.model_dump(mode="json")}, handle)


@router.get("/groups/{group_id}", tags=["roster"], summary="A group and its members")
async def get_group(group_id: UUID, principal: Staff, runtime: Run) -> GroupOut:
    async with runtime.engine.connect() as conn:
        group = await group_in_scope(conn, principal, group_id)
        members = await queries.group_member_ids(conn, group_id)
    return GroupOut(group_id=group_id, academy_id=group.academy_id, name=group.name, pupil_ids=members)


@router.get("/academies/{academy_id}/groups", tags=["roster"], summary="An academy's groups")
async def list_groups(
    academy_id: UUID, principal: Staff, runtime: Run, limit: PageSize = 50, cursor: Cursor = None
) -> Page[dict[str, Any]]:
    after = (cursor_position(cursor, group_id=UUID) or {}).get("group_id")
    async with runtime.engine.connect() as conn:
        await academy_in_scope(conn, principal, academy_id)
        rows = await queries.groups_after(conn, academy_id, after, limit + 1)
    items = [{"group_id": r.group_id, "name": r.name} for r in rows]
    return page_of(items, limit, lambda g: {"group_id": str(g["group_id"])})


# --- Observations -------------------------------------------------------------------------------


@router.post("/observations", tags=["observations"], status_code=201, response_model=RecordedOut,
             summary="Record one rating (ObservationRecorded)")
async def record_observation(body: ObservationIn, principal: Observer, runtime: Run, ctx: Ctx,
                             key: IdempotencyKey = None) -> JSONResponse:
    rating = Rating(
        index=0, observation_id=body.observation_id or uuid.uuid4(), pupil_id=body.pupil_id,
        statement_id=body.statement_id, level=body.level, observer_id=body.observer_id or principal.subject,
        observed_at=body.observed_at, framework_version=body.framework_version, assessment_id=body.assessment_id,
        has_note=body.note is not None,
    )
    return await _record(runtime, ctx, principal, key, body, [rating], {0: body.note} if body.note else {})


@router.post("/observations/bulk", tags=["observations"], status_code=201, response_model=RecordedOut,
             summary="Record a whole class's ratings in one request: all of them, or none",
             openapi_extra=body_limit(MAX_BULK_OBSERVATIONS_BYTES))
async def record_observations(body: BulkObservationsIn, principal: Observer, runtime: Run, ctx: Ctx,
                              key: IdempotencyKey = None) -> JSONResponse:
    observer = body.observer_id or principal.subject
    ratings = [
        Rating(
            index=i, observation_id=r.observation_id or uuid.uuid4(), pupil_id=r.pupil_id, statement_id=r.statement_id,
            level=r.level, observer_id=observer, observed_at=r.observed_at or body.observed_at,
            framework_version=None if r.assessment_id else body.framework_version, assessment_id=r.assessment_id,
            has_note=r.note is not None,
        )
        for i, r in enumerate(body.ratings)
    ]
    notes = {i: r.note for i, r in enumerate(body.ratings) if r.note is not None}
    return await _record(runtime, ctx, principal, key, body, ratings, notes)


async def _record(runtime: Runtime, ctx: handlers.Context, principal: Principal, key: str | None, body: Any,
                  ratings: list[Rating], notes: dict[int, str]) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        events = await handlers.record_observations(conn, ctx, principal, ratings, notes)
        return 201, RecordedOut(recorded=len(events), observation_ids=[e.observation_id for e in events])

    return await command(runtime, principal, key, body, handle)


@router.post("/observations/{observation_id}/corrections", tags=["observations"], status_code=201,
             response_model=RecordedOut, summary="Correct a rating: a new observation that names the one it corrects")
async def correct_observation(observation_id: UUID, body: CorrectionIn, principal: Observer, runtime: Run, ctx: Ctx,
                              key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        event = await handlers.correct_observation(conn, ctx, principal, observation_id, body.level, body.note)
        return 201, RecordedOut(recorded=1, observation_ids=[event.observation_id])

    return await command(runtime, principal, key, {"observation_id": observation_id, **body.model_dump(mode="json")}, handle)


@router.get("/pupils/{pupil_id}/observations", tags=["observations"], summary="A pupil's observations, newest first")
async def list_observations(pupil_id: UUID, principal: Staff, runtime: Run, ctx: Ctx,
                            read: Annotated[PersonalDataReads, Depends(audit_reads)], limit: PageSize = 50,
                            cursor: Cursor = None) -> Page[ObservationOut]:
    position = cursor_position(cursor, observed_at=AwareDatetime, observation_id=UUID)
    before = (position["observed_at"], position["observation_id"]) if position else None
    async with runtime.engine.begin() as conn:
        pupil = await pupil_in_scope(conn, principal, pupil_id, personal=True)
        rows = await queries.observations_before(conn, pupil_id, before, limit + 1)
        notes = await ctx.personal.notes(conn, [r.observation_id for r in rows[:limit] if r.has_note])
        categories = [ReadCategory.OBSERVATIONS, *([ReadCategory.OBSERVATION_NOTES] if notes else [])]
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=categories)
    items = [
        ObservationOut(observation_id=r.observation_id, pupil_id=r.pupil_id, assessment_id=r.assessment_id,
                       framework_version=r.framework_version, statement_id=r.statement_id, level=r.level,
                       observer_id=r.observer_id, observed_at=r.observed_at, corrects=r.corrects,
                       note=notes.get(r.observation_id))
        for r in rows
    ]
    return page_of(items, limit, lambda o: {"observed_at": o.observed_at.isoformat(), "observation_id": str(o.observation_id)})


# --- Assessments, screenings, profiles, progress ------------------------------------------------


@router.post("/assessments", tags=["assessments"], status_code=201, response_model=StartedOut,
             summary="Start an individual assessment (pupil_id) or a class or group screening (class_id, group_id)")
async def start_assessment(body: AssessmentStartIn, principal: Observer, runtime: Run, ctx: Ctx,
                           key: IdempotencyKey = None) -> JSONResponse:
    request = handlers.StartRequest(body.strands, body.framework_version, body.pupil_id, body.class_id, body.group_id)

    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        started = await handlers.start_assessment(conn, ctx, principal, request)
        first = started.assessments[0]
        return 201, StartedOut(
            screening_id=started.screening_id, framework_version=first.framework_version, strands=first.strands,
            assessments=[StartedAssessment(assessment_id=a.assessment_id, pupil_id=a.pupil_id) for a in started.assessments],
            left_out=[LeftOut(pupil_id=p, reason=opt_out.REASON) for p in started.left_out],
        )

    return await command(runtime, principal, key, body, handle)


@router.get("/assessments/{assessment_id}", tags=["assessments"], response_model=AssessmentOut,
            summary="An assessment: what is rated, what is missing, and its scores once completed")
async def get_assessment(assessment_id: UUID, principal: Staff, runtime: Run, ctx: Ctx) -> AssessmentOut:
    async with runtime.engine.connect() as conn:
        row = await assessment_in_scope(conn, principal, assessment_id)
        framework = await ctx.frameworks.get(conn, row.trust_id, row.framework_version)
        rated = await queries.rated_statements(conn, assessment_id)
        scores = await queries.strand_scores_of(conn, assessment_id)
    return AssessmentOut(
        assessment_id=row.assessment_id, pupil_id=row.pupil_id, screening_id=row.screening_id,
        framework_version=row.framework_version, strands=list(row.strands), started_by=row.started_by,
        started_at=row.started_at, status="completed" if row.completed_at else "open", completed_at=row.completed_at,
        working_at_strand=row.working_at_strand, baseline=row.baseline, rated_statements=len(rated),
        missing_statements=[s for s in framework.statement_ids(row.strands) if s not in rated],
        scores=[score_out(s, framework) for s in scores],
    )


@router.post("/assessments/{assessment_id}/complete", tags=["assessments"], response_model=CompletedOut,
             summary="Complete an assessment: AssessmentCompleted and one StrandScored per strand")
async def complete_assessment(assessment_id: UUID, principal: Observer, runtime: Run, ctx: Ctx,
                              key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, completed_out(await handlers.complete_assessment(conn, ctx, principal, assessment_id))

    return await command(runtime, principal, key, {"assessment_id": assessment_id}, handle)


@router.get("/pupils/{pupil_id}/assessments", tags=["assessments"], summary="A pupil's assessments, newest first")
async def list_assessments(pupil_id: UUID, principal: Staff, runtime: Run, limit: PageSize = 50,
                           cursor: Cursor = None) -> Page[dict[str, Any]]:
    position = cursor_position(cursor, started_at=AwareDatetime, assessment_id=UUID)
    before = (position["started_at"], position["assessment_id"]) if position else None
    async with runtime.engine.connect() as conn:
        await pupil_in_scope(conn, principal, pupil_id)
        rows = await queries.assessments_before(conn, pupil_id, before, limit + 1)
    items = [
        {"assessment_id": r.assessment_id, "screening_id": r.screening_id, "framework_version": r.framework_version,
         "strands": list(r.strands), "started_at": r.started_at, "completed_at": r.completed_at,
         "working_at_strand": r.working_at_strand, "baseline": r.baseline}
        for r in rows
    ]
    return page_of(items, limit, lambda a: {"started_at": a["started_at"].isoformat(), "assessment_id": str(a["assessment_id"])})


@router.get("/pupils/{pupil_id}/progress", tags=["assessments"],
            summary="A pupil's completed assessments (% per need over time) and progress from the baseline")
async def get_progress(pupil_id: UUID, principal: Staff, runtime: Run) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        await pupil_in_scope(conn, principal, pupil_id)
        series = (await queries.completed_series(conn, [pupil_id]))[pupil_id]
    baseline = next((p.assessment_id for p in series if p.baseline), series[0].assessment_id if series else None)
    return {
        "pupil_id": pupil_id,
        "baseline_assessment_id": baseline,
        "assessments": [dataclasses.asdict(p) for p in series],
        "progress": [dataclasses.asdict(p) for p in progress(series)],
    }


@router.get("/screenings/{screening_id}", tags=["screening"], response_model=ScreeningOut,
            summary="A screening and its assessments")
async def get_screening(screening_id: UUID, principal: Staff, runtime: Run) -> ScreeningOut:
    async with runtime.engine.connect() as conn:
        screening = await screening_in_scope(conn, principal, screening_id)
        rows = await queries.assessment_rows(conn, await queries.screening_assessment_ids(conn, screening_id))
    return ScreeningOut(
        screening_id=screening_id, academy_id=screening.academy_id, class_id=screening.class_id,
        group_id=screening.group_id, framework_version=screening.framework_version, strands=list(screening.strands),
        started_at=screening.started_at,
        assessments=[ScreeningAssessment(assessment_id=r.assessment_id, pupil_id=r.pupil_id, completed=r.completed_at is not None)
                     for r in rows.values()],
    )


@router.post("/screenings/{screening_id}/complete", tags=["screening"], response_model=CompletedOut,
             summary="Complete every open assessment of a screening: all, or none if any statement is unrated")
async def complete_screening(screening_id: UUID, principal: Observer, runtime: Run, ctx: Ctx,
                             key: IdempotencyKey = None) -> JSONResponse:
    async def handle(conn: AsyncConnection) -> tuple[int, Any]:
        return 200, completed_out(await handlers.complete_screening(conn, ctx, principal, screening_id))

    return await command(runtime, principal, key, {"screening_id": screening_id}, handle)


@router.get("/screenings/{screening_id}/profile", tags=["screening"], response_model=ClassProfile,
            summary="The screening's class profile: working-at against expected for age, who is flagged, the distribution")
async def screening_profile(screening_id: UUID, principal: Staff, runtime: Run, ctx: Ctx,
                            read: Annotated[PersonalDataReads, Depends(audit_reads)]) -> ClassProfile:
    async with runtime.engine.begin() as conn:
        screening = await screening_in_scope(conn, principal, screening_id)
        rows = await queries.assessment_rows(conn, await queries.screening_assessment_ids(conn, screening_id))
        framework = await ctx.frameworks.get(conn, screening.trust_id, screening.framework_version)
        profile = await profile_of(conn, ctx, framework, [r.pupil_id for r in rows.values()], screening_id)
        await _record_profile_read(conn, runtime, read, profile, screening.trust_id, screening.academy_id)
        return profile


@router.get("/classes/{class_id}/profile", tags=["screening"], response_model=ClassProfile,
            summary="The class profile from each pupil's latest completed assessment")
async def class_profile_of(
    class_id: UUID, principal: Staff, runtime: Run, ctx: Ctx, read: Annotated[PersonalDataReads, Depends(audit_reads)],
    framework_version: Annotated[str | None, Query(max_length=80, description="Default: the class's latest assessments'")] = None,
) -> ClassProfile:
    async with runtime.engine.begin() as conn:
        owner = await class_in_scope(conn, principal, class_id)
        cohort = [p.pupil_id for p in await queries.pupils_in(conn, class_id=class_id)]
        version = framework_version or await queries.latest_framework_version(conn, cohort) or SAMPLE_VERSION
        framework = await ctx.frameworks.get(conn, owner.trust_id, version)
        profile = await profile_of(conn, ctx, framework, cohort, None)
        await _record_profile_read(conn, runtime, read, profile, owner.trust_id, owner.academy_id)
        return profile


async def _record_profile_read(conn: AsyncConnection, runtime: Runtime, read: PersonalDataReads, profile: ClassProfile,
                               trust_id: UUID, academy_id: UUID) -> None:
    """A class profile names every child it lists: one read per child, in the transaction that read them."""
    await read.record_many(conn, runtime.store, pupils=[(child.pupil_id, academy_id) for child in profile.children],
                           trust_id=trust_id, data_categories=[ReadCategory.CLASS_PROFILE])


# --- Helpers -------------------------------------------------------------------------------------


async def _required_body(request: Request) -> bytes:
    """The raw body: BodySizeLimit has already held it to the route's x-max-body-bytes."""
    body = await request.body()
    if not body:
        raise UnprocessableEntity("the request has no body")
    return body
