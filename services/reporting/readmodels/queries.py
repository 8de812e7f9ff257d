"""Reading the read models: a pupil's profile and progress, an academy's dashboard, the trust's."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from uuid import UUID

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.readmodels.opt_outs import opted_out_clause
from services.reporting.readmodels.suppression import suppress
from services.reporting.readmodels.tables import ERASURES
from services.reporting.readmodels.tables import LIVE as T

STRAND_ORDER = ["being", "doing", "thinking", "power-and-identity", "skills-and-structure", "interdependence"]


async def pupil_row(conn: AsyncConnection, pupil_id: UUID) -> Any:
    return (await conn.execute(select(T.pupils).where(T.pupils.c.pupil_id == pupil_id))).first()


async def pupil_profile(conn: AsyncConnection, pupil_id: UUID) -> dict[str, Any]:
    pupil = await pupil_row(conn, pupil_id)
    s = T.strand_scores.c
    scores = (await conn.execute(select(T.strand_scores).where(s.pupil_id == pupil_id).order_by(s.scored_at, s.strand))).all()
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in scores:
        series[row.strand].append({"assessment_id": row.assessment_id, "scored_at": row.scored_at,
                                   "strand_percent": row.strand_percent, "need_percents": row.need_percents,
                                   "threshold_met": row.threshold_met, "baseline": row.baseline})
    return {
        "pupil_id": pupil_id, "academy_id": pupil.academy_id, "on_roll": pupil.left_on is None,
        "working_at_strand": pupil.working_at_strand, "framework_version": pupil.framework_version,
        "baseline_assessment_id": pupil.baseline_assessment_id, "latest_assessment_id": pupil.latest_assessment_id,
        "progress": dict(series), "plans": await plans_of(conn, pupil_id),
    }


async def plans_of(conn: AsyncConnection, pupil_id: UUID) -> list[dict[str, Any]]:
    """Each plan of the pupil (its latest version), with its reviews and the pupil's sessions."""
    p, m = T.plans.c, T.plan_pupils.c
    rows = (await conn.execute(
        select(T.plans).join(T.plan_pupils, m.plan_id == p.plan_id).where(m.pupil_id == pupil_id)
        .order_by(p.issued_at, p.plan_version)
    )).all()
    latest: dict[UUID, Any] = {}
    first_issued: dict[UUID, Any] = {}
    for row in rows:
        first_issued.setdefault(row.plan_id, row.issued_at)
        latest[row.plan_id] = row
    if not latest:
        return []
    ids = list(latest)
    ss = T.sessions.c
    sessions = {r.plan_id: (r.n, r.minutes) for r in (await conn.execute(
        select(ss.plan_id, func.count().label("n"), func.coalesce(func.sum(ss.minutes), 0).label("minutes"))
        .where(ss.plan_id.in_(ids), (ss.pupil_id == pupil_id) | ss.pupil_id.is_(None)).group_by(ss.plan_id)
    )).all()}
    rv = T.plan_reviews.c
    reviews: dict[UUID, list[dict[str, Any]]] = defaultdict(list)
    for r in (await conn.execute(select(T.plan_reviews)
                                 .where(rv.plan_id.in_(ids), (rv.pupil_id == pupil_id) | rv.pupil_id.is_(None))
                                 .order_by(rv.reviewed_at, rv.event_id))).all():
        reviews[r.plan_id].append({"reviewed_at": r.reviewed_at, "strand_percent_now": r.strand_percent_now,
                                   "change_since_previous_plan": r.change_since_previous_plan,
                                   "change_since_baseline": r.change_since_baseline, "need_percents_now": r.need_percents_now})
    closed = {r.plan_id: r.closed_at for r in (await conn.execute(
        select(T.plan_closures).where(T.plan_closures.c.plan_id.in_(ids)))).all()}
    plans = []
    for plan_id, row in sorted(latest.items(), key=lambda item: (first_issued[item[0]], str(item[0]))):
        count, minutes = sessions.get(plan_id, (0, 0))
        plans.append({
            "plan_id": plan_id, "version": row.plan_version, "kind": row.kind, "strand": row.strand,
            "targets": row.targets, "activities": row.activities, "frequency": row.frequency,
            "sessions_per_week": row.sessions_per_week, "session_minutes": row.session_minutes,
            "practitioner_id": row.practitioner_id, "issued_at": first_issued[plan_id], "review_on": row.review_on,
            "status": "closed" if plan_id in closed else ("reviewed" if reviews.get(plan_id) else "issued"),
            "closed_at": closed.get(plan_id), "sessions": count, "minutes": int(minutes),
            "reviews": reviews.get(plan_id, []),
        })
    return plans


async def _children(conn: AsyncConnection, trust_id: UUID, academy_id: UUID | None = None) -> list[Any]:
    p, e = T.pupils.c, ERASURES.c
    # An erased pupil's row is their roster entry only (erasure.PUPIL_DATA emptied): not a child on
    # roll; a child whose family opted out of the online tool is left out (readmodels/opt_outs.py).
    query = select(T.pupils).where(p.trust_id == trust_id, p.left_on.is_(None), ~exists().where(
        e.pupil_id == p.pupil_id, e.data_category == "all"), ~opted_out_clause(p.pupil_id))
    if academy_id is not None:
        query = query.where(p.academy_id == academy_id)
    return list((await conn.execute(query)).all())


def _age_expected_share(children: list[Any]) -> float | None:
    """Of the assessed children whose expected strand is known, the share working at it."""
    known = [c for c in children if c.working_at_strand and c.expected_strand]
    if not known:
        return None
    return round(sum(1 for c in known if c.working_at_strand == c.expected_strand) / len(known), 3)


def _strands(found: set[str]) -> list[str]:
    return [s for s in STRAND_ORDER if s in found] + sorted(found - set(STRAND_ORDER))


async def academy_dashboard(conn: AsyncConnection, trust_id: UUID, academy_id: UUID) -> dict[str, Any]:
    """For the academy's own staff: exact figures (they never leave the academy)."""
    children = await _children(conn, trust_id, academy_id)
    per_strand: dict[str, int] = defaultdict(int)
    for child in children:
        if child.working_at_strand:
            per_strand[child.working_at_strand] += 1
    # Progress from baseline: the latest % minus the baseline's, on the strand the child was
    # working at when the baseline was taken.
    s = T.strand_scores.c
    ids = [c.pupil_id for c in children if c.baseline_assessment_id]
    changes = []
    if ids:
        rows = (await conn.execute(select(s.pupil_id, s.strand, s.strand_percent, s.scored_at, s.baseline, s.assessment_id,
                                          s.working_at_strand)
                                   .where(s.pupil_id.in_(ids)).order_by(s.scored_at))).all()
        by_pupil: dict[UUID, list[Any]] = defaultdict(list)
        for row in rows:
            by_pupil[row.pupil_id].append(row)
        baseline_of = {c.pupil_id: c.baseline_assessment_id for c in children}
        for pupil, scores in by_pupil.items():
            base = [r for r in scores if r.assessment_id == baseline_of[pupil]]
            if not base:
                continue
            strand = base[0].working_at_strand
            on_strand = [r for r in scores if r.strand == strand]
            if len(on_strand) > 1:
                changes.append(on_strand[-1].strand_percent - on_strand[0].strand_percent)
    return {
        "academy_id": academy_id,
        "children": len(children),
        "assessed": sum(1 for c in children if c.working_at_strand),
        "working_at": {strand: per_strand[strand] for strand in _strands(set(per_strand))},
        "progress_from_baseline": {
            "children_reassessed": len(changes),
            "mean_change_points": round(sum(changes) / len(changes), 1) if changes else None,
            "improved": sum(1 for c in changes if c > 0),
        },
        # The assessment service works out the strand expected for each child's age (it holds the
        # dates of birth; reporting never does) and publishes it with AssessmentCompleted.
        "working_at_age_expected_share": _age_expected_share(children),
    }


async def trust_dashboard(conn: AsyncConnection, trust_id: UUID) -> dict[str, Any]:
    """Leaves the academies: every count goes through the DfE suppression rule."""
    children = [c for c in await _children(conn, trust_id) if c.working_at_strand]
    academies = sorted({c.academy_id for c in children}, key=str)
    strands = _strands({c.working_at_strand for c in children})
    counts = [[sum(1 for c in children if c.academy_id == a and c.working_at_strand == s) for s in strands] for a in academies]
    published = suppress(counts)
    return {
        "trust_id": trust_id,
        "strands": strands,
        "academies": [{"academy_id": a, "working_at": dict(zip(strands, published.cells[i], strict=True)),
                       "total": published.row_totals[i]} for i, a in enumerate(academies)],
        "totals": dict(zip(strands, published.column_totals, strict=True)),
        "total": published.total,
        "rule": "DfE: counts 1-5 shown as c, with secondary suppression; totals rounded to the nearest 10",
    }
