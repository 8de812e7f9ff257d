"""Records as the caller may reach them: each finds a record by id, raises the domain's Unknown…
error when there is none, and checks the caller's scope against the trust and academy the record
is stored under (never ids the request sent)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment import queries
from services.assessment.domain.errors import (
    UnknownAcademy,
    UnknownAssessment,
    UnknownClass,
    UnknownGroup,
    UnknownPupil,
    UnknownScreening,
)
from services.assessment.privacy import erased
from shared.auth import Principal, ensure_scope
from shared.problems import Gone


async def pupil_in_scope(conn: AsyncConnection, principal: Principal, pupil_id: UUID, *,
                         personal: bool = False) -> queries.PupilRow:
    """The pupil's roster row, in the caller's scope; `personal`: the caller is about to read the
    pupil's personal data, which an erased pupil no longer has (410)."""
    pupil = (await queries.pupil_rows(conn, [pupil_id])).get(pupil_id)
    if pupil is None:
        raise UnknownPupil([pupil_id])
    ensure_scope(principal, pupil.trust_id, pupil.academy_id)
    if personal and await erased(conn, [pupil_id]):
        raise Gone("the pupil was erased: their personal data is no longer held")
    return pupil


async def class_in_scope(conn: AsyncConnection, principal: Principal, class_id: UUID) -> Any:
    owner = await queries.class_row(conn, class_id)
    if owner is None:
        raise UnknownClass(class_id)
    ensure_scope(principal, owner.trust_id, owner.academy_id)
    return owner


async def group_in_scope(conn: AsyncConnection, principal: Principal, group_id: UUID) -> Any:
    group = await queries.group_row(conn, group_id)
    if group is None:
        raise UnknownGroup(group_id)
    ensure_scope(principal, group.trust_id, group.academy_id)
    return group


async def assessment_in_scope(conn: AsyncConnection, principal: Principal, assessment_id: UUID) -> Any:
    row = (await queries.assessment_rows(conn, [assessment_id])).get(assessment_id)
    if row is None:
        raise UnknownAssessment(assessment_id)
    ensure_scope(principal, row.trust_id, row.academy_id)
    return row


async def screening_in_scope(conn: AsyncConnection, principal: Principal, screening_id: UUID) -> Any:
    screening = await queries.screening_row(conn, screening_id)
    if screening is None:
        raise UnknownScreening(screening_id)
    ensure_scope(principal, screening.trust_id, screening.academy_id)
    return screening


async def academy_in_scope(conn: AsyncConnection, principal: Principal, academy_id: UUID) -> Any:
    row = await queries.academy(conn, academy_id)
    if row is None:
        raise UnknownAcademy(academy_id)
    ensure_scope(principal, row.trust_id, row.academy_id)
    return row
