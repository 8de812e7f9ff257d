"""The read models are derived from the events: rebuilt from them, they come out the same."""

from __future__ import annotations

from sqlalchemy import select

from services.assessment.projections import rebuild
from services.assessment.tables import DERIVED
from tests.integration.assessment.helpers import SAMPLE, class_of, import_roster, now, pupil_rows, roster_csv
from tests.unit.assessment.report import levels_at


async def snapshot(engine, trust_id):
    async with engine.connect() as conn:
        return {
            table.name: sorted(tuple(map(str, row))
                               for row in await conn.execute(select(table).where(table.c.trust_id == trust_id)))
            for table in DERIVED
        }


async def test_rebuilding_a_trusts_read_models_from_its_events_reproduces_them(api, tenant, engine):
    class_id, pupils = await class_of(api, tenant, 4)
    headers = tenant.headers()
    started = (await api.post("/assessments", headers=headers, json={
        "class_id": str(class_id), "strands": ["being"], "framework_version": SAMPLE})).json()
    ratings = [{"pupil_id": a["pupil_id"], "statement_id": s, "level": level.value, "assessment_id": a["assessment_id"]}
               for a in started["assessments"] for s, level in levels_at(2).items()]
    first = (await api.post("/observations/bulk", json={"observed_at": now(), "ratings": ratings}, headers=headers)).json()
    await api.post(f"/observations/{first['observation_ids'][0]}/corrections", json={"level": "secure"}, headers=headers)
    assert (await api.post(f"/screenings/{started['screening_id']}/complete", headers=headers)).status_code == 200
    await api.post("/observations", headers=headers, json={"pupil_id": str(pupils[0]), "statement_id": "doing.1",
                                                            "level": "emerging", "observed_at": now(),
                                                            "framework_version": SAMPLE})
    await import_roster(api, tenant, roster_csv(pupil_rows(1, "4A")), whole_roll="true")  # the class leaves, one pupil joins
    before = await snapshot(engine, tenant.trust_id)
    assert all(before.values()), "every read model has rows for this trust"

    # The events are sealed (their levels and scores): the rebuild opens them with the service's keyring.
    runtime = api._transport.app.state.runtime  # noqa: SLF001 - the in-process app's runtime
    async with engine.begin() as conn:
        replayed = await rebuild(conn, tenant.trust_id, sealing=runtime.sealing)

    assert replayed > 4 * 45
    assert await snapshot(engine, tenant.trust_id) == before
