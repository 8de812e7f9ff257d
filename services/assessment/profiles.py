"""A class profile as staff read it: each pupil's latest completed assessment, by name, against
what is expected for their age (the rule itself is domain.screening.class_profile)."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment import handlers, queries
from services.assessment.domain.framework import Framework
from services.assessment.domain.screening import AssessmentPoint, ChildResult, ClassProfile, class_profile


async def profile_of(conn: AsyncConnection, ctx: handlers.Context, framework: Framework, pupil_ids: list[UUID],
                     screening_id: UUID | None) -> ClassProfile:
    """The profile of these pupils (of one screening's assessments only, when `screening_id`)."""
    series = await queries.completed_series(conn, pupil_ids, screening_id)
    details = await ctx.personal.details(conn, pupil_ids)
    children = []
    # As a class list reads: by name (the same order however the profile was asked for).
    for pupil_id in sorted(pupil_ids, key=lambda p: (details[p].display_name if p in details else "", str(p))):
        latest: AssessmentPoint | None = series[pupil_id][-1] if series[pupil_id] else None
        known = details.get(pupil_id)
        children.append(ChildResult(
            pupil_id=pupil_id, name=known.display_name if known else str(pupil_id),
            date_of_birth=known.date_of_birth if known else None,
            assessment_id=latest.assessment_id if latest else None, completed_at=latest.completed_at if latest else None,
            working_at=latest.working_at if latest else None, strands=latest.strands if latest else {},
        ))
    return class_profile(framework, children, ctx.clock().date())
