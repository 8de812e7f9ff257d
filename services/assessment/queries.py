"""Reads of the assessment service's tables that handlers and the API share.

Each returns plain rows or small dataclasses; none decides anything. Lists take the cursor
position of the previous page and a limit (the API fetches limit + 1 to know whether more exist).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment.domain.assessment import PupilHistory
from services.assessment.domain.screening import AssessmentPoint, StrandResult
from services.assessment.tables import (
    SCHEMA,
    academies,
    assessments,
    classes,
    group_members,
    groups,
    observations,
    pupils,
    screenings,
    strand_scores,
)


@dataclass(frozen=True)
class PupilRow:
    pupil_id: UUID
    trust_id: UUID
    academy_id: UUID
    class_id: UUID | None
    on_roll: bool
    enrolled_on: date
    left_on: date | None


@dataclass(frozen=True)
class Owned:
    """Any record's tenancy: what scope checks read (never the ids a request sent)."""

    id: UUID
    trust_id: UUID
    academy_id: UUID


async def pupil_rows(conn: AsyncConnection, pupil_ids: Iterable[UUID], *, key_share: bool = False) -> dict[UUID, PupilRow]:
    """Pupils by id; `key_share` also locks their rows (KEY SHARE, in id order) in the same
    statement, as opt_out.opted_out(..., locked=True) needs before it reads the opt-outs."""
    ids = sorted(set(pupil_ids))
    if not ids:
        return {}
    query = select(pupils).where(pupils.c.pupil_id.in_(ids))
    if key_share:
        query = query.order_by(pupils.c.pupil_id).with_for_update(key_share=True)
    rows = await conn.execute(query)
    return {row.pupil_id: PupilRow(**row._mapping) for row in rows}


async def pupils_in(conn: AsyncConnection, *, class_id: UUID | None = None, group_id: UUID | None = None,
                    academy_id: UUID | None = None, on_roll_only: bool = True) -> list[PupilRow]:
    query = select(pupils).order_by(pupils.c.pupil_id)
    if class_id is not None:
        query = query.where(pupils.c.class_id == class_id)
    if group_id is not None:
        query = query.join(group_members, group_members.c.pupil_id == pupils.c.pupil_id).where(
            group_members.c.group_id == group_id
        )
    if academy_id is not None:
        query = query.where(pupils.c.academy_id == academy_id)
    if on_roll_only:
        query = query.where(pupils.c.on_roll)
    return [PupilRow(**row._mapping) for row in await conn.execute(query)]


async def class_pupils_after(conn: AsyncConnection, class_id: UUID, after: UUID | None, limit: int) -> list[PupilRow]:
    """A page of the pupils on roll in a class, by pupil id as text, after `after`."""
    rows = [p for p in await pupils_in(conn, class_id=class_id) if after is None or str(p.pupil_id) > str(after)]
    return sorted(rows, key=lambda p: str(p.pupil_id))[:limit]


async def academy(conn: AsyncConnection, academy_id: UUID) -> Any:
    return (await conn.execute(select(academies).where(academies.c.academy_id == academy_id))).first()


async def class_row(conn: AsyncConnection, class_id: UUID) -> Any:
    return (await conn.execute(select(classes).where(classes.c.class_id == class_id))).first()


async def group_row(conn: AsyncConnection, group_id: UUID) -> Any:
    return (await conn.execute(select(groups).where(groups.c.group_id == group_id))).first()


async def academies_after(conn: AsyncConnection, trust_id: UUID, academy_ids: Iterable[UUID] | None,
                          after: UUID | None, limit: int) -> list[Any]:
    """A page of the trust's academies by id (only `academy_ids`, unless None: the whole trust)."""
    query = select(academies).where(academies.c.trust_id == trust_id).order_by(academies.c.academy_id).limit(limit)
    if academy_ids is not None:
        query = query.where(academies.c.academy_id.in_(list(academy_ids)))
    if after:
        query = query.where(academies.c.academy_id > after)
    return list(await conn.execute(query))


async def classes_after(conn: AsyncConnection, academy_id: UUID, after_name: str | None, limit: int) -> list[Any]:
    """A page of an academy's classes by name."""
    query = select(classes).where(classes.c.academy_id == academy_id).order_by(classes.c.name).limit(limit)
    if after_name is not None:
        query = query.where(classes.c.name > after_name)
    return list(await conn.execute(query))


async def groups_after(conn: AsyncConnection, academy_id: UUID, after: UUID | None, limit: int) -> list[Any]:
    """A page of an academy's groups (id and name) by id."""
    query = (select(groups.c.group_id, groups.c.name).where(groups.c.academy_id == academy_id)
             .order_by(groups.c.group_id).limit(limit))
    if after:
        query = query.where(groups.c.group_id > after)
    return list(await conn.execute(query))


async def group_member_ids(conn: AsyncConnection, group_id: UUID) -> list[UUID]:
    rows = await conn.execute(
        select(group_members.c.pupil_id).where(group_members.c.group_id == group_id).order_by(group_members.c.pupil_id)
    )
    return list(rows.scalars())


async def class_names(conn: AsyncConnection, academy_id: UUID) -> dict[UUID, str]:
    rows = await conn.execute(select(classes.c.class_id, classes.c.name).where(classes.c.academy_id == academy_id))
    return {row.class_id: row.name for row in rows}


async def observation_row(conn: AsyncConnection, observation_id: UUID) -> Any:
    return (await conn.execute(select(observations).where(observations.c.observation_id == observation_id))).first()


async def observations_before(conn: AsyncConnection, pupil_id: UUID, before: tuple[datetime, UUID] | None,
                              limit: int) -> list[Any]:
    """A page of a pupil's observations, newest first, after the (observed_at, observation_id)
    that ended the previous page."""
    query = (select(observations).where(observations.c.pupil_id == pupil_id)
             .order_by(observations.c.observed_at.desc(), observations.c.observation_id.desc()).limit(limit))
    if before:
        moment, last = before
        query = query.where(
            (observations.c.observed_at < moment)
            | ((observations.c.observed_at == moment) & (observations.c.observation_id < last))
        )
    return list(await conn.execute(query))


async def correction_of(conn: AsyncConnection, observation_id: UUID) -> UUID | None:
    return await conn.scalar(select(observations.c.observation_id).where(observations.c.corrects == observation_id))  # type: ignore[no-any-return]


async def assessment_rows(conn: AsyncConnection, assessment_ids: Iterable[UUID], *, lock: str | None = None) -> dict[UUID, Any]:
    """Assessments by id; lock="share" holds off their completion, "update" their recording.

    Rows are locked in id order, so two requests locking overlapping sets cannot deadlock.
    """
    ids = sorted(set(assessment_ids))
    if not ids:
        return {}
    query = select(assessments).where(assessments.c.assessment_id.in_(ids)).order_by(assessments.c.assessment_id)
    if lock is not None:
        query = query.with_for_update(read=lock == "share")
    return {row.assessment_id: row for row in await conn.execute(query)}


async def assessments_before(conn: AsyncConnection, pupil_id: UUID, before: tuple[datetime, UUID] | None,
                             limit: int) -> list[Any]:
    """A page of a pupil's assessments, newest first, after the (started_at, assessment_id) that
    ended the previous page."""
    query = (select(assessments).where(assessments.c.pupil_id == pupil_id)
             .order_by(assessments.c.started_at.desc(), assessments.c.assessment_id.desc()).limit(limit))
    if before:
        moment, last = before
        query = query.where((assessments.c.started_at < moment)
                            | ((assessments.c.started_at == moment) & (assessments.c.assessment_id < last)))
    return list(await conn.execute(query))


async def screening_row(conn: AsyncConnection, screening_id: UUID) -> Any:
    return (await conn.execute(select(screenings).where(screenings.c.screening_id == screening_id))).first()


async def screening_assessment_ids(conn: AsyncConnection, screening_id: UUID) -> list[UUID]:
    rows = await conn.execute(
        select(assessments.c.assessment_id)
        .where(assessments.c.screening_id == screening_id)
        .order_by(assessments.c.assessment_id)
    )
    return list(rows.scalars())


_LATEST_MET = text(
    f"""
    SELECT DISTINCT ON (s.pupil_id, s.strand) s.pupil_id, s.strand, s.threshold_met
    FROM "{SCHEMA}".strand_scores s
    WHERE s.pupil_id = ANY(CAST(:pupils AS uuid[]))
    ORDER BY s.pupil_id, s.strand, s.scored_at DESC
    """
)


async def histories(conn: AsyncConnection, pupil_ids: Sequence[UUID]) -> dict[UUID, PupilHistory]:
    """What each pupil's earlier completed assessments say: latest result per strand, any at all."""
    ids = list(set(pupil_ids))
    met: dict[UUID, dict[str, bool]] = {p: {} for p in ids}
    for row in await conn.execute(_LATEST_MET, {"pupils": ids}):
        met[row.pupil_id][row.strand] = row.threshold_met
    completed = set((await conn.execute(
        select(assessments.c.pupil_id).where(assessments.c.pupil_id.in_(ids), assessments.c.completed_at.is_not(None))
    )).scalars())
    return {p: PupilHistory(met[p], p in completed) for p in ids}


async def completed_series(conn: AsyncConnection, pupil_ids: Sequence[UUID], screening_id: UUID | None = None
                           ) -> dict[UUID, list[AssessmentPoint]]:
    """Each pupil's completed assessments with their strand results, oldest first."""
    query = (
        select(assessments.c.assessment_id, assessments.c.pupil_id, assessments.c.completed_at,
               assessments.c.framework_version, assessments.c.baseline, assessments.c.working_at_strand,
               strand_scores.c.strand, strand_scores.c.strand_percent, strand_scores.c.threshold_met,
               strand_scores.c.need_percents)
        .join(strand_scores, strand_scores.c.assessment_id == assessments.c.assessment_id)
        .where(assessments.c.pupil_id.in_(list(pupil_ids)), assessments.c.completed_at.is_not(None))
        .order_by(assessments.c.completed_at, assessments.c.assessment_id)
    )
    if screening_id is not None:
        query = query.where(assessments.c.screening_id == screening_id)
    points: dict[UUID, AssessmentPoint] = {}
    owner: dict[UUID, UUID] = {}
    for row in await conn.execute(query):
        point = points.get(row.assessment_id)
        if point is None:
            point = points[row.assessment_id] = AssessmentPoint(
                row.assessment_id, row.completed_at, row.framework_version, bool(row.baseline),
                row.working_at_strand, {},
            )
            owner[row.assessment_id] = row.pupil_id
        point.strands[row.strand] = StrandResult(row.strand_percent, row.threshold_met, row.need_percents)  # type: ignore[index]
    series: dict[UUID, list[AssessmentPoint]] = {p: [] for p in pupil_ids}
    for assessment_id, point in points.items():
        series[owner[assessment_id]].append(point)
    return series


async def latest_framework_version(conn: AsyncConnection, pupil_ids: Sequence[UUID]) -> str | None:
    """The framework of the most recent completed assessment among these pupils."""
    return await conn.scalar(  # type: ignore[no-any-return]
        select(assessments.c.framework_version)
        .where(assessments.c.pupil_id.in_(list(pupil_ids)), assessments.c.completed_at.is_not(None))
        .order_by(assessments.c.completed_at.desc()).limit(1)
    )


async def strand_scores_of(conn: AsyncConnection, assessment_id: UUID) -> list[Any]:
    return list(await conn.execute(
        select(strand_scores).where(strand_scores.c.assessment_id == assessment_id).order_by(strand_scores.c.scored_at)
    ))


async def rated_statements(conn: AsyncConnection, assessment_id: UUID) -> set[str]:
    rows = await conn.execute(
        select(observations.c.statement_id).where(observations.c.assessment_id == assessment_id).distinct()
    )
    return set(rows.scalars())
