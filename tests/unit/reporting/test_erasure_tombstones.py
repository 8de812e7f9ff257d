"""The tombstones in front of the read models' projections (services/reporting/readmodels/erasure.py):
what an erased pupil's later events, an expired category's older events and a group plan become."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.reporting.readmodels.erasure import Remembered, keep
from shared.events.consent import DataCategory, ErasureReason, PupilErased, RetentionClock, RetentionExpired
from shared.events.envelope import Envelope
from shared.events.planning import PlanIssued, PlanKind, SessionLogged

TRUST, ACADEMY = uuid.uuid4(), uuid.uuid4()
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def envelope(data: Any, at: datetime = T0) -> Envelope[Any]:
    return Envelope(data=data, trust_id=TRUST, academy_id=ACADEMY, source="test", time=at)


def erased(pupil: uuid.UUID) -> Envelope[Any]:
    return envelope(PupilErased(pupil_id=pupil, erasure_id=uuid.uuid4(), data_category=DataCategory.ALL,
                                reason=ErasureReason.RIGHT_TO_ERASURE, requested_by="dpo-1", key_destroyed=True,
                                erased_at=T0))


def plan(*pupils: uuid.UUID, single: uuid.UUID | None = None) -> PlanIssued:
    return PlanIssued(plan_id=uuid.uuid4(), plan_version=1, kind=PlanKind.INDIVIDUAL if single else PlanKind.GROUP,
                      pupil_id=single, strand="being", target_statements=["being.safe.1"], activities=["a"],
                      frequency="weekly", practitioner_id="p-1", review_on=date(2027, 1, 1), issued_at=T0,
                      pupil_ids=list(pupils))


def session(pupil: uuid.UUID | None, at: datetime) -> Envelope[Any]:
    return envelope(SessionLogged(session_id=uuid.uuid4(), plan_id=uuid.uuid4(), pupil_id=pupil, held_on=date(2026, 12, 1),
                                  minutes=30, activities_done=[], logged_by="p-1"), at)


async def test_nothing_about_an_erased_pupil_is_applied_whenever_it_arrives() -> None:
    gone, kept = uuid.uuid4(), uuid.uuid4()
    graves = Remembered()
    assert graves.add(erased(gone)) == (gone, "all")
    later = T0 + timedelta(days=1)
    events = [session(gone, later), session(kept, later), session(None, later),
              envelope(plan(gone, single=gone)), envelope(plan(gone, kept)), envelope(plan(gone))]
    applied = await keep(None, graves, events)  # type: ignore[arg-type]
    # The erased pupil's session and individual plan go; the group plan keeps the other pupil only;
    # a group plan of erased pupils alone goes; a class session (no pupil) stays.
    assert [e.data.pupil_id for e in applied[:2]] == [kept, None]
    assert len(applied) == 3
    group = applied[2].data
    assert group.pupil_ids == [kept] and group.pupil_id is None


async def test_an_expired_category_keeps_only_what_is_newer_than_the_expiry() -> None:
    pupil = uuid.uuid4()
    graves = Remembered()
    graves.add(envelope(RetentionExpired(pupil_id=pupil, data_category=DataCategory.ACTION_PLANS, policy_id=uuid.uuid4(),
                                         counted_from=RetentionClock.LEAVING_DATE, due_on=date(2026, 12, 1),
                                         expired_at=T0)))
    older, newer = session(pupil, T0 - timedelta(hours=1)), session(pupil, T0 + timedelta(hours=1))
    assert await keep(None, graves, [older, newer]) == [newer]  # type: ignore[arg-type]
