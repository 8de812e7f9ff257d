"""Session notes are stored sealed under every present child's key; a note from before sealing is
sealed when the service starts; a note of a group session opens only while every child's key lives."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import text

from services.planning.notes import seal_clear_notes
from tests.integration.assessment.helpers import class_of
from tests.integration.planning.test_planning_flow import assess, plan_body


async def _row(engine, session_id):  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        await conn.execute(text("SELECT set_config('flourish.trust_id', 'system', false)"))
        return (await conn.execute(text("SELECT note, sealed_note, sealed_for FROM planning.session_notes "
                                        "WHERE session_id = :s"), {"s": session_id})).first()


async def test_a_note_is_sealed_at_rest_and_a_clear_note_from_before_is_sealed_on_start(planning) -> None:  # type: ignore[no-untyped-def]
    p = planning
    _, pupils = await class_of(p.assessment, p.tenant, 2, born=date(2016, 5, 1))
    for pupil in pupils:
        await p.suggestion_of(pupil, await assess(p, pupil, 1))
    staff = p.staff()
    suggestion = await p.suggestion_of(pupils[0])
    draft = await p.client.post("/plans", headers=staff, json=plan_body(pupils[0], suggestion, kind="group",
                                                                        pupil_ids=[str(x) for x in pupils]))
    assert draft.status_code == 201, draft.text
    plan_id = draft.json()["plan_id"]
    await p.client.post(f"/plans/{plan_id}/issue", json={"practitioner_id": "practitioner-7"}, headers=staff)
    note = "Both hid under the table when the bell rang"
    logged = await p.client.post(f"/plans/{plan_id}/sessions", headers=staff, json={
        "held_on": str(date.today() - timedelta(days=1)), "minutes": 30, "note": note})
    assert logged.status_code == 201, logged.text
    session_id = logged.json()["session_id"]

    engine = p.app.state.runtime.engine
    row = await _row(engine, session_id)
    assert row.note is None and row.sealed_note.startswith("fl1.") and note not in row.sealed_note
    assert sorted(map(str, row.sealed_for)) == sorted(map(str, pupils)), "sealed under every present child's key"
    read = await p.client.get(f"/sessions/{session_id}/note", headers=staff)
    assert read.json()["note"] == note

    # A note as a database from before revision seal_0004 holds it: in clear.
    async with engine.begin() as conn:
        await conn.execute(text("SELECT set_config('flourish.trust_id', 'system', true)"))
        await conn.execute(text("UPDATE planning.session_notes SET note = :n, sealed_note = NULL, sealed_for = NULL "
                                "WHERE session_id = :s"), {"n": note, "s": session_id})
    assert (await p.client.get(f"/sessions/{session_id}/note", headers=staff)).json()["note"] == note
    assert await seal_clear_notes(engine, p.app.state.runtime.deps.handlers.notes) == 1  # what start-up runs
    row = await _row(engine, session_id)
    assert row.note is None and note not in row.sealed_note
    assert (await p.client.get(f"/sessions/{session_id}/note", headers=staff)).json()["note"] == note
