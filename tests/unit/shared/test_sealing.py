"""The sealing of events' personal fields: round trip, binding to the event and the pupil, erasure,
a group's erased members, and which events stay readable (the audit ledger's among them)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import orjson
import pytest

from shared.datakeys import DataKeyUnavailable, SealedFieldUnreadable
from shared.events.planning import PlanIssued, PlanKind
from shared.events.registry import registered_types
from shared.events.sealing import SEALED_KEY, EventSealing, SealingUnavailable, open_data
from tests.integration.kernel.helpers import TRUST, MemoryKeyring, observation


def group_plan(pupil: uuid.UUID, members: list[uuid.UUID]) -> PlanIssued:
    return PlanIssued(plan_id=uuid.uuid4(), plan_version=1, kind=PlanKind.GROUP, pupil_id=pupil, strand="being",
                      target_statements=["being.12"], activities=["Turn-taking games"], frequency="2 × 30 min",
                      practitioner_id="p-1", review_on=date(2027, 1, 1), issued_at=datetime.now(UTC),
                      pupil_ids=members)


async def test_personal_fields_leave_the_json_and_come_back_with_the_pupils_key() -> None:
    keys = MemoryKeyring()
    sealing = EventSealing(keys)
    envelope = observation(statement_id="being.secret.7")
    sealed = await sealing.seal(envelope.data, envelope.id, TRUST)
    text = orjson.dumps(sealed)
    assert b"being.secret.7" not in text and b'"level":' not in text and b'"has_note":' not in text
    assert set(sealed[SEALED_KEY]["by_pupil"]) == {str(envelope.data.pupil_id)}
    assert await sealing.open(type(envelope.data), sealed, envelope.id, TRUST) == envelope.data


async def test_a_sealed_part_moved_to_another_event_or_tampered_with_does_not_open() -> None:
    sealing = EventSealing(MemoryKeyring())
    envelope = observation()
    sealed = await sealing.seal(envelope.data, envelope.id, TRUST)
    with pytest.raises(SealedFieldUnreadable):
        await sealing.open(type(envelope.data), sealed, uuid.uuid4(), TRUST)  # another event's id
    with pytest.raises(SealedFieldUnreadable):
        await sealing.open(type(envelope.data), {**sealed, SEALED_KEY: {"v": 1, "by_pupil": {"x": "y"}}}, envelope.id, TRUST)


async def test_an_erased_pupils_event_opens_to_nothing_and_a_groups_erased_member_is_dropped() -> None:
    keys = MemoryKeyring()
    sealing = EventSealing(keys)
    erased, kept = uuid.uuid4(), uuid.uuid4()
    about_erased, about_kept = group_plan(erased, [erased, kept]), group_plan(kept, [erased, kept])
    ids = uuid.uuid4(), uuid.uuid4()
    sealed = [await sealing.seal(e, i, TRUST) for e, i in zip((about_erased, about_kept), ids, strict=True)]
    keys.destroy(erased)
    assert await sealing.open(PlanIssued, sealed[0], ids[0], TRUST) is None
    opened = await sealing.open(PlanIssued, sealed[1], ids[1], TRUST)
    assert opened is not None and opened.pupil_ids == [kept] and opened.activities == ["Turn-taking games"]


async def test_without_a_keyring_a_sealed_event_is_refused_and_a_plain_one_still_reads() -> None:
    envelope = observation()
    sealed = await EventSealing(MemoryKeyring()).seal(envelope.data, envelope.id, TRUST)
    with pytest.raises(SealingUnavailable):
        await open_data(None, type(envelope.data), sealed, envelope.id, TRUST)
    plain = orjson.loads(envelope.data.model_dump_json())
    assert await open_data(None, type(envelope.data), plain, envelope.id, TRUST) == envelope.data


def test_the_events_the_audit_ledger_and_erasure_read_have_nothing_sealed_and_every_personal_field_exists() -> None:
    for event_type, model in registered_types().items():
        assert model.personal <= set(model.model_fields), event_type
        if model.context in ("consent", "reporting", "audit"):
            assert not model.personal, f"{event_type} is read without keys (erasure, the audit ledger)"
    pupils = {t for t, m in registered_types().items() if m.personal}
    assert {"flourish.assessment.ObservationRecorded.v1", "flourish.assessment.StrandScored.v1",
            "flourish.planning.PlanIssued.v1", "flourish.planning.SessionLogged.v1"} <= pupils


async def test_a_remembering_sealing_asks_once_per_pupil_keeps_an_erasure_and_never_an_outage() -> None:
    """A rebuild's sealing (remember=True): each pupil's key asked for once, an erased pupil's events
    skipped every time without asking again, a key service that is down not remembered (the next
    event asks again, and fails closed meanwhile), and what opens is what a plain sealing opens."""
    keys = MemoryKeyring()
    writer = EventSealing(keys)
    erased, kept = uuid.uuid4(), uuid.uuid4()
    events = [observation(pupil_id=pupil) for pupil in (erased, kept, erased, kept)]
    sealed = [await writer.seal(e.data, e.id, TRUST) for e in events]
    keys.destroy(erased)
    keys.asked = 0
    rebuild = EventSealing(keys, remember=True)
    opened = [await rebuild.open(type(e.data), s, e.id, TRUST) for e, s in zip(events, sealed, strict=True)]
    assert opened == [None, events[1].data, None, events[3].data]
    assert keys.asked == 2  # once per pupil, the erased one included
    assert opened == [await EventSealing(keys).open(type(e.data), s, e.id, TRUST)
                      for e, s in zip(events, sealed, strict=True)]
    keys.asked = 0
    assert await rebuild.open(type(events[1].data), sealed[1], events[1].id, TRUST) == events[1].data
    assert keys.asked == 0  # remembered
    keys.down = True
    outage = EventSealing(keys, remember=True)
    for _ in range(2):
        with pytest.raises(DataKeyUnavailable):
            await outage.open(type(events[1].data), sealed[1], events[1].id, TRUST)
    keys.down = False
    assert await outage.open(type(events[1].data), sealed[1], events[1].id, TRUST) == events[1].data
    # A sealed part moved to another event still does not open with a remembered key.
    with pytest.raises(SealedFieldUnreadable):
        await rebuild.open(type(events[1].data), sealed[1], uuid.uuid4(), TRUST)
