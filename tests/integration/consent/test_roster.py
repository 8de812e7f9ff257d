"""The consent service's roster, fed by the assessment and planning contexts' events through its
idempotent consumer, and the read models rebuilt from the event store."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select

from services.consent.projections import rebuild
from services.consent.tables import consent_records, pupils
from shared.auth import Role
from shared.events.assessment import ObservationRecorded, PupilLeft
from shared.events.envelope import Envelope
from tests.integration.consent.conftest import Consent, eventually


async def roster_row(consent: Consent, pupil) -> object:  # type: ignore[no-untyped-def]
    async with consent.app.state.runtime.engine.connect() as conn:
        return (await conn.execute(select(pupils).where(pupils.c.pupil_id == pupil))).first()


async def test_leaving_counts_only_from_the_pupils_academy_and_activity_moves_the_clock(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    observed = Envelope(
        data=ObservationRecorded(observation_id=pupil, pupil_id=pupil, framework_version="sample-1",
                                 statement_id="being.safe.1", level="emerging", observer_id="staff-1",
                                 observed_at=datetime(2026, 3, 2, tzinfo=UTC)),
        trust_id=consent.trust_id, academy_id=consent.academy_id, source="/flourish/assessment",
        time=datetime(2026, 3, 2, 9, tzinfo=UTC))
    await consent.publish(
        consent.assessment_event(PupilLeft(pupil_id=pupil, left_on=date(2026, 1, 1)), consent.other_academy_id),
        observed,
        consent.assessment_event(PupilLeft(pupil_id=pupil, left_on=date(2026, 7, 22))),
    )

    async def left() -> object:
        row = await roster_row(consent, pupil)
        return row if row is not None and row.left_on is not None else None

    row = await eventually(left)
    assert row.left_on == date(2026, 7, 22) and row.academy_id == consent.academy_id  # type: ignore[attr-defined]
    assert row.last_activity_on == date(2026, 3, 2)  # type: ignore[attr-defined]


async def test_the_consent_records_rebuild_from_the_event_store(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco, json=consent.consent_body())
    await consent.client.post(f"/pupils/{pupil}/consents/share_camhs/withdrawal", headers=consent.senco,
                              json=consent.withdrawal_body())
    await consent.client.post(f"/pupils/{pupil}/consents", headers=consent.senco,
                              json=consent.consent_body("share_other"))
    engine = consent.app.state.runtime.engine
    query = select(consent_records).where(consent_records.c.pupil_id == pupil).order_by(consent_records.c.purpose)
    async with engine.connect() as conn:
        before = [dict(r) for r in (await conn.execute(query)).mappings()]
    async with engine.begin() as conn:
        await rebuild(conn, consent.app.state.runtime.store)
    async with engine.connect() as conn:
        after = [dict(r) for r in (await conn.execute(query)).mappings()]
    history = (await consent.client.get(f"/pupils/{pupil}/consents/history", headers=consent.senco)).json()
    assert len(before) == 2 and after == before
    assert [i["kind"] for i in history["items"]] == ["granted", "withdrawn", "granted"]


async def test_the_decision_api_checks_every_token_and_role(consent: Consent) -> None:
    [pupil] = await consent.enrol()
    good = consent.service["Authorization"]
    forged = await consent.decision(pupil, headers={"Authorization": good[:-4] + "AAAA"})
    missing = await consent.client.get("/sharing-decisions", params={
        "pupil_id": str(pupil), "agency_category": "camhs", "data_kind": "report"})
    auditor = await consent.decision(pupil, headers=consent.token(Role.auditor))
    twice = [await consent.decision(pupil) for _ in range(2)]
    assert forged.status_code == missing.status_code == 401
    assert auditor.status_code == 403
    assert [r.status_code for r in twice] == [200, 200]
