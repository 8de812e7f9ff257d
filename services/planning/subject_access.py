"""The planning service's part of a pupil's subject-access export (UK GDPR Art. 15): every plan
the pupil is on (each version: targets, activities, reviews), every session they attended with its
note, and the copies of their scores planning keeps for its suggestions.

Asked by the consent service's `GET /pupils/{id}/subject-access` with the DPO's own token (only a
DPO may ask), scope-checked as every read is, and recorded in the audit ledger as a
`subject_access_export` read. A group plan or session is about other children too: their ids,
their scores and their review outcomes are left out and replaced by a count ("2 other pupils").
A group session's note is one text about every child present: it is included, marked for the
DPO to check for other children before the export is released (Art. 15(4)). Notes are read
through SessionNotes only. Staff appear by their pseudonymous ids only.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import any_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning.handlers import PlanningDeps, pupil_in_scope
from services.planning.notes import open_texts, plan_field, session_field
from services.planning.tables import participation, plans, sessions, strand_scores
from shared.api import requires
from shared.audit import PersonalDataReads, ReadCategory, audit_reads
from shared.auth import Principal, Role
from shared.internal import INTERNAL
from shared.service import Runtime, current_runtime, dependencies_of

router = APIRouter(tags=["subject access"])

GROUP_NOTE = ("written about a group session: check it for other pupils' personal data before the export is "
              "released (UK GDPR Art. 15(4))")


async def _deps(request: Request) -> PlanningDeps:
    return dependencies_of(request).handlers  # type: ignore[no-any-return]


@router.get("/pupils/{pupil_id}/subject-access", dependencies=[INTERNAL],
            summary="This service's part of a pupil's subject-access export (DPO only; consent gathers it)")
async def subject_access(
    pupil_id: UUID, runtime: Annotated[Runtime, Depends(current_runtime)], deps: Annotated[PlanningDeps, Depends(_deps)],
    principal: Annotated[Principal, Depends(requires(Role.dpo))],
    read: Annotated[PersonalDataReads, Depends(audit_reads)],
) -> JSONResponse:
    async with runtime.engine.begin() as conn:
        pupil = await pupil_in_scope(conn, principal, pupil_id)  # 404, 403, 410 (erased)
        section = await planning_section(conn, deps, pupil_id)
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=[ReadCategory.SUBJECT_ACCESS_EXPORT])
    # Personal data: no shared cache may keep a copy.
    return JSONResponse({"services": {"planning": section}}, headers={"Cache-Control": "no-store"})


async def planning_section(conn: AsyncConnection, deps: PlanningDeps, pupil_id: UUID) -> dict[str, Any]:
    taking_part = (await conn.execute(select(participation).where(participation.c.pupil_id == pupil_id))).first()
    return {
        "status": "provided",
        "plans": await _plans(conn, deps, pupil_id),
        "sessions": await _sessions(conn, deps, pupil_id),
        "scores_held_for_suggestions": await _scores(conn, pupil_id),
        "participation": None if taking_part is None else {
            "withdrawn": taking_part.withdrawn, "decided_at": taking_part.decided_at.isoformat()},
        "redactions": ["other pupils of a group or class plan or session: counted, never identified; "
                       "their scores and review outcomes are left out",
                       "group session notes: included, marked for the DPO to check for other pupils",
                       "staff: pseudonymous staff ids only (no staff names are held)"],
    }


def _others(pupil_ids: list[Any], pupil_id: UUID) -> str | None:
    count = sum(1 for p in pupil_ids if UUID(str(p)) != pupil_id)
    return f"{count} other pupil{'' if count == 1 else 's'}" if count else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def _plans(conn: AsyncConnection, deps: PlanningDeps, pupil_id: UUID) -> list[dict[str, Any]]:
    rows = await conn.execute(select(plans).where(any_(plans.c.pupil_ids) == pupil_id)
                              .order_by(plans.c.created_at, plans.c.plan_id, plans.c.version))
    out = []
    for r in rows:
        at_issue = (r.percents_at_issue or {}).get(str(pupil_id))
        review = None
        if r.review:
            mine = [o for o in r.review.get("pupils", []) if o.get("pupil_id") == str(pupil_id)]
            review = {"reviewed_by": r.review.get("reviewed_by"), "reviewed_at": r.review.get("reviewed_at"),
                      "outcome": {k: v for k, v in mine[0].items() if k != "pupil_id"} if mine else None}
        out.append({
            "plan_id": str(r.plan_id), "version": r.version, "kind": r.kind, "status": r.status,
            "other_pupils": _others(r.pupil_ids, pupil_id), "class_id": str(r.class_id) if r.class_id else None,
            "strand": r.strand, "framework_version": r.framework_version, "targets": r.targets,
            "activities": await open_texts(deps.notes.keyring, r.trust_id, r.activities, plan_field(r.plan_id, r.version)),
            "frequency": {"sessions_per_week": r.sessions_per_week, "minutes": r.session_minutes, "setting": r.setting},
            "review_on": r.review_on.isoformat(), "practitioner_id": r.practitioner_id, "created_by": r.created_by,
            "created_at": _iso(r.created_at), "issued_at": _iso(r.issued_at), "strand_percent_at_issue": at_issue,
            "review": review, "closed_at": _iso(r.closed_at),
        })
    return out


async def _sessions(conn: AsyncConnection, deps: PlanningDeps, pupil_id: UUID) -> list[dict[str, Any]]:
    rows = list(await conn.execute(select(sessions).where(any_(sessions.c.pupil_ids) == pupil_id)
                                   .order_by(sessions.c.held_on, sessions.c.session_id)))
    out = []
    for r in rows:
        others = _others(r.pupil_ids, pupil_id)
        note = await deps.notes.get(conn, r.session_id)
        out.append({
            "session_id": str(r.session_id), "plan_id": str(r.plan_id), "plan_version": r.plan_version,
            "held_on": r.held_on.isoformat(), "minutes": r.minutes, "other_pupils": others,
            "staff_present": r.staff_ids, "activities_done": await open_texts(deps.notes.keyring, r.trust_id, r.activities_done,
                                                session_field(r.session_id)), "logged_by": r.logged_by,
            "logged_at": _iso(r.logged_at), "note": note,
            "note_review": GROUP_NOTE if note is not None and others else None,
        })
    return out


async def _scores(conn: AsyncConnection, pupil_id: UUID) -> list[dict[str, Any]]:
    rows = await conn.execute(select(strand_scores).where(strand_scores.c.pupil_id == pupil_id)
                              .order_by(strand_scores.c.scored_at, strand_scores.c.strand))
    return [{"assessment_id": str(r.assessment_id), "strand": r.strand, "strand_percent": r.strand_percent,
             "threshold_met": r.threshold_met, "working_at_strand": r.working_at_strand,
             "scored_at": r.scored_at.isoformat()} for r in rows]
