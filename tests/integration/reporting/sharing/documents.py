"""A pupil's documents in the reporting read models, for tests that share them: one assessment
(a baseline at `being`) and one plan, written as the read models' consumer would write them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from services.reporting.readmodels.tables import LIVE as T


@dataclass(frozen=True)
class Documents:
    assessment_id: uuid.UUID
    plan_id: uuid.UUID

    def id_of(self, kind: str) -> str:
        return str(self.plan_id if kind == "action_plan" else self.assessment_id)


async def seed(engine: Any, trust_id: uuid.UUID, academy_id: uuid.UUID, pupil_id: uuid.UUID,
               strand_percent: float = 42.5) -> Documents:
    assessment_id, plan_id = uuid.uuid4(), uuid.uuid4()
    at = datetime.now(UTC)
    tenant = {"trust_id": trust_id, "academy_id": academy_id}
    async with engine.begin() as conn:
        await conn.execute(insert(T.pupils).values(
            pupil_id=pupil_id, **tenant, framework_version="thrive-1", working_at_strand="being",
            baseline_assessment_id=assessment_id, latest_assessment_id=assessment_id,
            latest_completed_at=at).on_conflict_do_nothing())
        await conn.execute(insert(T.strand_scores).values(
            assessment_id=assessment_id, strand="being", pupil_id=pupil_id, **tenant, framework_version="thrive-1",
            need_percents={"safety": strand_percent, "comfort": 50.0}, strand_percent=strand_percent,
            threshold_percent=60.0, threshold_met=False, working_at_strand="being",
            focus_statements=["being.1", "being.3"], baseline=True, scored_at=at))
        await conn.execute(insert(T.plans).values(
            plan_id=plan_id, plan_version=1, **tenant, kind="individual", strand="being", targets=["being.1"],
            activities=["Calm box"], frequency="weekly", sessions_per_week=1, session_minutes=30,
            practitioner_id="practitioner-1", review_on=date(2027, 1, 15), issued_at=at))
        await conn.execute(insert(T.plan_pupils).values(plan_id=plan_id, pupil_id=pupil_id, **tenant))
    return Documents(assessment_id, plan_id)
