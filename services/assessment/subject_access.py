"""The assessment service's part of a pupil's subject-access export (UK GDPR Art. 15): everything
it holds on the pupil, with their personal data opened with their key.

Asked by the consent service's `GET /pupils/{id}/subject-access` with the DPO's own token (only a
DPO may ask), scope-checked as every read is, and recorded in the audit ledger as a
`subject_access_export` read. Other children are never named: a group the pupil is in says how
many other pupils it holds, not who. Staff appear by their pseudonymous ids only (the service
holds no staff names).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment.handlers import Context
from services.assessment.scope import pupil_in_scope
from services.assessment.tables import assessments, classes, group_members, groups, observations, strand_scores
from shared.api import requires
from shared.audit import PersonalDataReads, ReadCategory, audit_reads
from shared.auth import Principal, Role
from shared.internal import INTERNAL
from shared.service import Runtime, current_runtime, dependencies_of

router = APIRouter(tags=["subject access"])

SERVICE = "assessment"


async def _context(request: Request) -> Context:
    return dependencies_of(request).context  # type: ignore[no-any-return]


@router.get("/pupils/{pupil_id}/subject-access", dependencies=[INTERNAL],
            summary="This service's part of a pupil's subject-access export (DPO only; consent gathers it)")
async def subject_access(
    pupil_id: UUID, runtime: Annotated[Runtime, Depends(current_runtime)], ctx: Annotated[Context, Depends(_context)],
    principal: Annotated[Principal, Depends(requires(Role.dpo))],
    read: Annotated[PersonalDataReads, Depends(audit_reads)],
) -> JSONResponse:
    async with runtime.engine.begin() as conn:
        pupil = await pupil_in_scope(conn, principal, pupil_id, personal=True)  # 404, 403, 410 (erased)
        section = await assessment_section(conn, ctx, pupil)
        # The read is recorded in the transaction that made it: no record, no answer.
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=[ReadCategory.SUBJECT_ACCESS_EXPORT])
    # Personal data: no shared cache may keep a copy.
    return JSONResponse({"services": {"assessment": section}}, headers={"Cache-Control": "no-store"})


async def assessment_section(conn: AsyncConnection, ctx: Context, pupil: Any) -> dict[str, Any]:
    """Roster record and personal data, groups, observations with their notes, assessments with
    their scores."""
    pupil_id = pupil.pupil_id
    details = (await ctx.personal.details(conn, [pupil_id])).get(pupil_id)
    class_name = (await conn.scalar(select(classes.c.name).where(classes.c.class_id == pupil.class_id))
                  if pupil.class_id else None)
    roster = {
        "academy_id": str(pupil.academy_id), "class_id": str(pupil.class_id) if pupil.class_id else None,
        "class_name": class_name, "on_roll": pupil.on_roll, "enrolled_on": pupil.enrolled_on.isoformat(),
        "left_on": pupil.left_on.isoformat() if pupil.left_on else None,
    }
    personal = None
    if details is not None:
        personal = {"upn": details.upn, "legal_surname": details.legal_surname, "legal_forename": details.legal_forename,
                    "preferred_surname": details.preferred_surname, "preferred_forename": details.preferred_forename,
                    "date_of_birth": details.date_of_birth.isoformat(), "gender": details.gender,
                    "year_group": details.year_group}
    return {
        "status": "provided",
        "roster": roster,
        "personal_data": personal,
        "groups": await _groups(conn, pupil_id),
        "observations": await _observations(conn, ctx, pupil_id),
        "assessments": await _assessments(conn, pupil_id),
        "redactions": ["other pupils in a group: counted, never named or identified",
                       "staff: pseudonymous staff ids only (no staff names are held)"],
    }


async def _groups(conn: AsyncConnection, pupil_id: UUID) -> list[dict[str, Any]]:
    mine = select(group_members.c.group_id).where(group_members.c.pupil_id == pupil_id)
    others = (select(func.count()).where(group_members.c.group_id == groups.c.group_id,
                                         group_members.c.pupil_id != pupil_id).scalar_subquery())
    rows = await conn.execute(select(groups.c.group_id, groups.c.name, groups.c.created_at, others.label("others"))
                              .where(groups.c.group_id.in_(mine)).order_by(groups.c.created_at))
    return [{"group_id": str(r.group_id), "name": r.name, "created_at": r.created_at.isoformat(),
             "other_pupils": f"{r.others} other pupil{'' if r.others == 1 else 's'}"} for r in rows]


async def _observations(conn: AsyncConnection, ctx: Context, pupil_id: UUID) -> list[dict[str, Any]]:
    rows = list(await conn.execute(select(observations).where(observations.c.pupil_id == pupil_id)
                                   .order_by(observations.c.observed_at, observations.c.observation_id)))
    notes = await ctx.personal.notes(conn, [r.observation_id for r in rows if r.has_note])
    return [{"observation_id": str(r.observation_id), "observed_at": r.observed_at.isoformat(),
             "assessment_id": str(r.assessment_id) if r.assessment_id else None,
             "framework_version": r.framework_version, "statement_id": r.statement_id, "level": r.level,
             "observer_id": r.observer_id, "corrects": str(r.corrects) if r.corrects else None,
             "note": notes.get(r.observation_id)} for r in rows]


async def _assessments(conn: AsyncConnection, pupil_id: UUID) -> list[dict[str, Any]]:
    rows = list(await conn.execute(select(assessments).where(assessments.c.pupil_id == pupil_id)
                                   .order_by(assessments.c.started_at, assessments.c.assessment_id)))
    scores: dict[UUID, list[dict[str, Any]]] = {}
    for s in await conn.execute(select(strand_scores).where(strand_scores.c.pupil_id == pupil_id)
                                .order_by(strand_scores.c.scored_at, strand_scores.c.strand)):
        scores.setdefault(s.assessment_id, []).append({
            "strand": s.strand, "strand_percent": s.strand_percent, "need_percents": s.need_percents,
            "threshold_met": s.threshold_met, "working_at_strand": s.working_at_strand,
            "focus_statements": list(s.focus_statements), "baseline": s.baseline, "scored_at": s.scored_at.isoformat()})
    return [{"assessment_id": str(r.assessment_id), "screening_id": str(r.screening_id) if r.screening_id else None,
             "framework_version": r.framework_version, "strands": list(r.strands), "started_by": r.started_by,
             "started_at": r.started_at.isoformat(),
             "completed_at": r.completed_at.isoformat() if r.completed_at else None,
             "working_at_strand": r.working_at_strand, "baseline": r.baseline,
             "scores": scores.get(r.assessment_id, [])} for r in rows]
