"""The documents a share sends, assembled by the platform from the read models for the pupil the
share names — never taken from the caller (issue 16 item 1).

A share names a document kind and an id:

- `report` — the anonymised intervention report as data, as of one of the pupil's assessments
  (the id): the strand the child works at, each assessment at that strand (need and strand %),
  progress from the first to that one, the threshold and focus statements, and the plans issued
  by then with their sessions. No name, date of birth, UPN, gender or year group.
- `profile` — the pupil's progress profile as of one of their assessments (the id): every
  strand's scores up to and including it.
- `action_plan` — one of the pupil's plans (the id: its plan id), its latest version, reviews and
  the pupil's sessions.

An id that is not one of that pupil's documents of that kind — unknown, or another pupil's — is
`DocumentNotFound`, the same either way (no answer tells one from the other). The document is
plain JSON (ids and times as strings); `document_hash` in core.py is the SHA-256 of its canonical
form, which the agency can recompute from `data.document`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.readmodels.queries import plans_of
from services.reporting.readmodels.tables import LIVE as T
from shared.events.consent import DataKind

# The field name a frozen document is sealed under (DataKey.seal_json binds it).
DOCUMENT_FIELD = "sharing.document"


class DocumentNotFound(Exception):
    """The id names no document of that kind for that pupil (unknown, or another pupil's)."""


async def assemble(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID, kind: str,
                   document_id: UUID) -> dict[str, Any]:
    """The document `kind` `document_id` of this pupil, made now from the read models."""
    pupil = (await conn.execute(select(T.pupils).where(
        T.pupils.c.pupil_id == pupil_id, T.pupils.c.trust_id == trust_id))).first()
    if pupil is None:
        raise DocumentNotFound
    if kind == DataKind.ACTION_PLAN:
        document = await _plan(conn, pupil_id, document_id)
    else:
        scores = await _scores_until(conn, trust_id, pupil_id, document_id)
        document = _report(scores, await plans_of(conn, pupil_id)) if kind == DataKind.REPORT else _profile(scores)
    document = {"kind": str(kind), "document_id": document_id, "pupil_id": pupil_id,
                "framework_version": pupil.framework_version, **document}
    # Plain JSON from here on: what is sealed, hashed and sent is the same value.
    return orjson.loads(orjson.dumps(document, default=str))  # type: ignore[no-any-return]


async def _scores_until(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID, assessment_id: UUID) -> list[Any]:
    s = T.strand_scores.c
    anchor = (await conn.execute(select(s.scored_at).where(
        s.assessment_id == assessment_id, s.pupil_id == pupil_id, s.trust_id == trust_id).limit(1))).first()
    if anchor is None:
        raise DocumentNotFound
    return list((await conn.execute(select(T.strand_scores).where(
        s.pupil_id == pupil_id, s.trust_id == trust_id, s.scored_at <= anchor.scored_at)
        .order_by(s.scored_at, s.strand))).all())


def _score(row: Any) -> dict[str, Any]:
    return {"assessment_id": row.assessment_id, "scored_at": row.scored_at, "strand": row.strand,
            "strand_percent": row.strand_percent, "need_percents": row.need_percents,
            "threshold_met": row.threshold_met, "baseline": row.baseline}


def _profile(scores: list[Any]) -> dict[str, Any]:
    progress: dict[str, list[dict[str, Any]]] = {}
    for row in scores:
        progress.setdefault(row.strand, []).append(_score(row))
    return {"as_of": scores[-1].scored_at, "working_at_strand": scores[-1].working_at_strand, "progress": progress}


def _report(scores: list[Any], plans: list[dict[str, Any]]) -> dict[str, Any]:
    """What the intervention report says (readmodels/report.py build_report), as data."""
    latest_at = scores[-1].scored_at
    baseline = next((s for s in scores if s.baseline), scores[0])
    strand = scores[-1].working_at_strand or baseline.strand
    on_strand = [s for s in scores if s.strand == strand] or [baseline]
    first, latest = on_strand[0], on_strand[-1]
    progress = None
    if len(on_strand) > 1:
        progress = {"start": first.strand_percent, "end": latest.strand_percent,
                    "change": latest.strand_percent - first.strand_percent}
    issued = [p for p in plans if p["issued_at"] <= latest_at]
    return {
        "as_of": latest_at, "suggested_strand": baseline.working_at_strand, "strand": strand,
        "assessments": [_score(s) for s in on_strand], "progress": progress,
        "threshold_percent": latest.threshold_percent, "threshold_met": bool(latest.threshold_met),
        "focus_statements": list(latest.focus_statements or []),
        "plans": [{"plan_id": p["plan_id"], "strand": p["strand"], "targets": p["targets"],
                   "activities": p["activities"], "frequency": p["frequency"], "sessions": p["sessions"],
                   "minutes": p["minutes"]} for p in issued],
        "sessions": sum(p["sessions"] for p in issued), "hours": sum(p["minutes"] for p in issued) / 60,
    }


async def _plan(conn: AsyncConnection, pupil_id: UUID, plan_id: UUID) -> dict[str, Any]:
    # plans_of reads only the plans this pupil is on: another pupil's plan is not among them.
    found = [p for p in await plans_of(conn, pupil_id) if p["plan_id"] == plan_id]
    if not found:
        raise DocumentNotFound
    plan = dict(found[0])
    plan.pop("practitioner_id", None)  # a member of staff's id is not the pupil's data
    return {"plan": plan}


__all__ = ["DOCUMENT_FIELD", "DocumentNotFound", "assemble"]
