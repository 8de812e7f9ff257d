"""The bulk rebuild (readmodels/bulk.py: history folded in memory, written with COPY) makes exactly
the read models the projections make one event at a time.

The same topics — a few thousand events of every projected type, sealed as the services seal them,
with duplicates (an at-least-once relay), pupils who leave, rejoin and move academy, assessments
completed out of order, group plans, erased pupils (their keys destroyed, or only their tombstone
on the consent topic), retention expiries of one category (what an opt-out's grace period ends
in), events that claim another trust for a known pupil or academy, and records that are not valid
CloudEvents — are rebuilt twice: through the projections' statements one event at a time, and in
bulk. Every row of the nine tables must be the same.
"""

from __future__ import annotations

import random
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text

from services.reporting.readmodels.tables import NAMES, SCHEMA
from shared.events.assessment import (
    AssessmentCompleted,
    Level,
    ObservationRecorded,
    PupilEnrolled,
    PupilLeft,
    StrandScored,
)
from shared.events.consent import DataCategory, ErasureReason, PupilErased, RetentionClock, RetentionExpired
from shared.events.envelope import Envelope, encode, topic_for
from shared.events.planning import PlanClosed, PlanIssued, PlanKind, PlanReviewed, SessionLogged
from shared.events.sealing import EventSealing
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from shared.store.db import create_engine
from tests.conftest import database_of_its_own
from tests.integration.kernel.helpers import MemoryKeyring

T1, T2 = uuid.uuid4(), uuid.uuid4()
A1, A2, A3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()  # A1, A2 in T1; A3 in T2
START = datetime(2025, 9, 1, 8, tzinfo=UTC)


class History:
    """Events in the order they are published, each with its envelope time."""

    def __init__(self, keys: MemoryKeyring) -> None:
        self.sealing = EventSealing(keys)
        self.clock = START
        self.records: list[tuple[str, Envelope[Any]]] = []

    def add(self, context: str, data: Any, trust: uuid.UUID, academy: uuid.UUID) -> Envelope[Any]:
        self.clock += timedelta(minutes=7)
        envelope = Envelope(data=data, trust_id=trust, academy_id=academy, source=f"/flourish/{context}",
                            time=self.clock)
        self.records.append((context, envelope))
        return envelope

    async def outgoing(self, prefix: str) -> list[OutgoingRecord]:
        out = []
        for context, envelope in self.records:
            key, headers, _ = encode(envelope)
            sealed = await self.sealing.seal(envelope.data, envelope.id, envelope.trust_id)
            out.append(OutgoingRecord(topic_for(context, prefix), key, orjson.dumps(sealed), headers))
        return out


def _history(keys: MemoryKeyring) -> tuple[History, list[uuid.UUID]]:
    rng = random.Random(18)
    h = History(keys)
    pupils = [(uuid.uuid4(), T1, rng.choice((A1, A2))) for _ in range(36)] + [(uuid.uuid4(), T2, A3) for _ in range(12)]
    statements = [f"being.{n}" for n in range(1, 16)]
    for pupil, trust, academy in pupils:
        h.add("assessment", PupilEnrolled(pupil_id=pupil, enrolled_on=date(2025, 9, rng.randint(1, 9))), trust, academy)
    for round_ in range(2):
        for pupil, trust, academy in pupils:
            assessment = uuid.uuid4()
            for _ in range(rng.randint(12, 20)):
                h.add("assessment", ObservationRecorded(
                    observation_id=uuid.uuid4(), pupil_id=pupil, assessment_id=assessment, framework_version="f-1",
                    statement_id=rng.choice(statements), level=rng.choice(list(Level)), observer_id="staff-1",
                    observed_at=h.clock, corrects=None), trust, academy)
            # Completed out of order now and then: rm_pupils keeps the latest by completion time.
            completed_at = h.clock - timedelta(days=rng.choice((0, 0, 0, 400)))
            h.add("assessment", AssessmentCompleted(
                assessment_id=assessment, pupil_id=pupil, framework_version=f"f-{round_ + 1}", strands=["being", "doing"],
                completed_at=completed_at, baseline=round_ == 0 or rng.random() < 0.2,
                working_at_strand=rng.choice(("being", "doing")), completed_by="staff-1",
                expected_strand=rng.choice(("being", None))), trust, academy)
            for strand in ("being", "doing", "being"):  # a strand scored twice: the first row stays
                h.add("assessment", StrandScored(
                    assessment_id=assessment, pupil_id=pupil, framework_version="f-1", strand=strand,
                    need_percents={f"{strand}.a": round(rng.uniform(0, 100), 1), f"{strand}.b": 50},
                    strand_percent=round(rng.uniform(0, 100), 1), threshold_percent=64, threshold_met=rng.random() < .5,
                    working_at_strand=strand, focus_statements=rng.sample(statements, 3), baseline=round_ == 0,
                    scored_at=h.clock), trust, academy)
        for pupil, trust, academy in pupils:
            plan = uuid.uuid4()
            for version in (1, 2):
                h.add("planning", PlanIssued(
                    plan_id=plan, plan_version=version, kind=PlanKind.INDIVIDUAL, pupil_id=pupil, strand="being",
                    target_statements=rng.sample(statements, 2), activities=["Sand tray"], frequency="weekly",
                    practitioner_id="staff-2", review_on=date(2026, 1, 5), issued_at=h.clock,
                    sessions_per_week=2, session_minutes=30, supersedes_version=version - 1 or None), trust, academy)
            for _ in range(rng.randint(2, 5)):
                h.add("planning", SessionLogged(session_id=uuid.uuid4(), plan_id=plan, pupil_id=pupil,
                                                held_on=date(2025, 11, rng.randint(1, 28)), minutes=rng.choice((20, 30)),
                                                activities_done=["Sand tray"], logged_by="staff-2"), trust, academy)
            h.add("planning", PlanReviewed(plan_id=plan, plan_version=2, pupil_id=pupil, reviewed_by="staff-2",
                                           reviewed_at=h.clock, strand_percent_now=40.5, change_since_previous_plan=2.5,
                                           need_percents_now={"being.a": 40.5}), trust, academy)
            if rng.random() < 0.5:
                h.add("planning", PlanClosed(plan_id=plan, plan_version=2, pupil_id=pupil, closed_by="staff-2",
                                             closed_at=h.clock), trust, academy)
    # Group plans (no subject pupil: not sealed), one with an erased member.
    for members in (pupils[0:4], pupils[4:7], pupils[36:39]):
        trust, academy = members[0][1], members[0][2]
        h.add("planning", PlanIssued(
            plan_id=uuid.uuid4(), plan_version=1, kind=PlanKind.GROUP, pupil_id=None,
            pupil_ids=[p for p, _, _ in members], strand="doing", target_statements=["doing.1"], activities=["Lego"],
            frequency="daily", practitioner_id="staff-3", review_on=date(2026, 2, 1), issued_at=h.clock), trust, academy)
    # Leaving, rejoining (or an older enrolment arriving late), moving academy.
    for pupil, trust, academy in pupils[8:20]:
        h.add("assessment", PupilLeft(pupil_id=pupil, left_on=date(2026, 3, rng.randint(1, 28))), trust, academy)
    for n, (pupil, trust, academy) in enumerate(pupils[8:16]):
        rejoined = date(2026, 4, 1) if n % 2 else date(2025, 1, 1)
        moved = (A2 if academy == A1 else A1) if n % 3 == 0 else academy
        h.add("assessment", PupilEnrolled(pupil_id=pupil, enrolled_on=rejoined), trust, moved)
    # Another trust claimed for a known pupil, and for a known academy: refused.
    pupil, _, academy = pupils[20]
    h.add("assessment", ObservationRecorded(
        observation_id=uuid.uuid4(), pupil_id=pupil, framework_version="f-1", statement_id="being.1",
        level=Level.SECURE, observer_id="mallory", observed_at=h.clock), T2, academy)
    h.add("assessment", PupilEnrolled(pupil_id=uuid.uuid4(), enrolled_on=date(2025, 9, 1)), T2, A1)
    # Erasures: keys destroyed (the events do not open) or only the tombstone (they open, and are left out).
    erased = [pupils[1][0], pupils[5][0], pupils[22][0], pupils[40][0]]
    for pupil, trust, academy in pupils:
        if pupil in erased:
            h.add("consent", PupilErased(pupil_id=pupil, erasure_id=uuid.uuid4(), data_category=DataCategory.ALL,
                                         reason=ErasureReason.RIGHT_TO_ERASURE, requested_by="dpo-1", key_destroyed=True,
                                         erased_at=h.clock), trust, academy)
    # Expiry of one category, part-way through the history: what came before it stays out.
    middle = START + (h.clock - START) / 2
    for pupil, trust, academy in pupils[24:28] + pupils[42:44]:
        category = DataCategory.ASSESSMENTS if pupil in (pupils[24][0], pupils[25][0], pupils[42][0]) \
            else DataCategory.ACTION_PLANS
        h.add("consent", RetentionExpired(pupil_id=pupil, data_category=category, policy_id=uuid.uuid4(),
                                          counted_from=RetentionClock.LAST_ACTIVITY, due_on=middle.date(),
                                          expired_at=middle), trust, academy)
    return h, erased


async def test_bulk_rebuild_equals_the_projections_one_event_at_a_time(stack_settings, topic_prefix, monkeypatch):
    from flourish.local.migrate import migrate
    from services.reporting.readmodels.rebuild import rebuild

    keys = MemoryKeyring()
    history, erased = _history(keys)
    records = await history.outgoing(topic_prefix)
    # At-least-once: some records twice; and records that are not valid events.
    records += [records[n] for n in range(0, len(records), 17)]
    broken = records[3]
    records.append(OutgoingRecord(broken.topic, broken.key, broken.value,
                                  [(k, b"not-a-uuid" if k == "ce_trustid" else v) for k, v in broken.headers]))
    records.append(OutgoingRecord(broken.topic, broken.key, b"[1, 2]", broken.headers))
    for pupil in erased[:2]:
        keys.destroy(pupil)  # their sealed events no longer open
    types = {type(envelope.data) for _, envelope in history.records}
    assert len(types) == 11 and len(records) > 2500

    with database_of_its_own(stack_settings, "rebuild") as own:
        settings = own.model_copy(update={"topic_prefix": topic_prefix})
        await migrate(settings, ("reporting",))
        # The topics and ACLs of the test's prefix are the topic_prefix fixture's (as admin).
        publisher = KafkaPublisher(kafka_options(settings, ADMIN), client_id="test-bulk-rebuild")
        await publisher.start()
        try:
            await publisher.send_all(records)
        finally:
            await publisher.stop()
        engine = create_engine(settings, pool_size=2)
        try:
            # One event at a time: the projections' statements, each run cut to one event.
            monkeypatch.setattr(sys.modules["services.reporting.readmodels.rebuild"], "_CHUNK", 1)
            one_by_one = await rebuild(settings, engine, keyring=keys, bulk=False)
            expected = await _rows(engine)
            bulk = await rebuild(settings, engine, keyring=keys)
            found = await _rows(engine)
        finally:
            await engine.dispose()

    replayed = sum(1 for record in records if not record.topic.endswith(".consent"))
    assert (bulk.events, bulk.applied) == (one_by_one.events, one_by_one.applied) == (replayed, bulk.applied)
    for name in NAMES:
        assert expected[name], f"{name}: the history made no rows"
        assert found[name] == expected[name], f"{name}: the bulk rebuild differs from the projections"
    # And the promises themselves: nothing of an erased pupil but the roster entry; nothing refused.
    pupils = {row[0]: row for row in expected["rm_pupils"]}
    for pupil in erased:
        assert pupils[str(pupil)][3:] == (None,) * 8
        assert not any(str(pupil) in row for name in NAMES if name != "rm_pupils" for row in expected[name])
    assert not any("mallory" in str(row) for row in expected["rm_observations"])
    assert not any(row[1] == str(T2) and row[2] == str(A1) for row in expected["rm_pupils"])


async def _rows(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the nine tables, as text, sorted."""
    rows = {}
    async with engine.connect() as conn:
        for name in NAMES:
            columns = list((await conn.execute(text(f'SELECT * FROM "{SCHEMA}"."{name}" LIMIT 0'))).keys())
            listed = ", ".join(f'"{c}"::text' for c in columns)
            result = await conn.execute(text(f'SELECT {listed} FROM "{SCHEMA}"."{name}"'))
            rows[name] = sorted((tuple(row) for row in result.all()), key=repr)
    return rows
