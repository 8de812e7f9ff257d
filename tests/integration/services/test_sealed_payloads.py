"""Crypto-shredding reaches Kafka and every table: after a pupil's erasure, nothing the platform
said about them can be read anywhere — not on any topic, not in any row — while the other
children's data still opens.

The four services run in process on the real PostgreSQL and Kafka, on topics of the test's own.
Two children are observed, assessed and scored; each gets a plan of their own and both share a
group plan; sessions are logged with notes. The first child is then erased through the consent
service's public API, as a DPO would. The test then reads, as an adversary with a copy of the
topics and the database would, every record of every topic of the run as raw bytes and every row
of every table of the assessment and planning schemas, and finds none of the erased child's
levels, statements, scores, targets, activities or note text in clear or openable.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from sqlalchemy import text

from services.reporting.readmodels.rebuild import partitions_of
from services.reporting.sharing import SharingSettings
from shared.auth import DevIssuer, Role
from shared.datakeys import DataKeyClient, DataKeyDestroyed, PupilKeyring
from shared.events.registry import model_for
from shared.events.sealing import SEALED_KEY, EventSealing
from shared.messaging.clients import ADMIN, kafka_options
from shared.peers import ServiceTokens
from tests.integration.assessment.helpers import SAMPLE, Tenant, class_of
from tests.integration.kernel.helpers import eventually
from tests.integration.services.in_process import four_services, settings_for
from tests.unit.assessment.report import levels_at

DELIVERY = SharingSettings(allowed_private_networks=["127.0.0.1/32"], max_attempts=2, retry_schedule_s=[0, 0.05],
                           jitter=0.0, poll_interval_s=0.05)
PERSONAL_KEYS = {name for model in (model_for(t) for t in (
    "flourish.assessment.ObservationRecorded.v1", "flourish.assessment.AssessmentStarted.v1",
    "flourish.assessment.AssessmentCompleted.v1", "flourish.assessment.StrandScored.v1",
    "flourish.planning.PlanIssued.v1", "flourish.planning.PlanReviewed.v1", "flourish.planning.SessionLogged.v1",
)) for name in model.personal}


@dataclass
class Platform:
    apps: dict[str, FastAPI]
    clients: dict[str, httpx.AsyncClient]
    tenant: Tenant
    settings: Any
    prefix: str

    def staff(self, role: Role = Role.senco) -> dict[str, str]:
        return self.tenant.headers(role, subject="staff-1")

    def engine(self, service: str) -> Any:
        return self.apps[service].state.runtime.engine

    def keyring(self, service: str) -> PupilKeyring:
        return self.apps[service].state.runtime.sealing.keyring  # type: ignore[no-any-return]


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    async with AsyncExitStack() as stack:
        services = await four_services(stack, settings, DELIVERY)
        yield Platform(services.apps, services.clients, Tenant(DevIssuer(settings)), settings, topic_prefix)


async def assess(p: Platform, pupil: uuid.UUID, which: int) -> str:
    api = p.clients["assessment"]
    started = await api.post("/assessments", headers=p.staff(),
                             json={"strands": ["being"], "framework_version": SAMPLE, "pupil_id": str(pupil)})
    assert started.status_code == 201, started.text
    assessment_id = started.json()["assessments"][0]["assessment_id"]
    ratings = [{"pupil_id": str(pupil), "statement_id": s, "level": level.value, "assessment_id": assessment_id}
               for s, level in levels_at(which).items()]
    rated = await api.post("/observations/bulk", headers=p.staff(),
                           json={"observed_at": datetime.now(UTC).isoformat(), "ratings": ratings})
    assert rated.status_code == 201, rated.text
    assert (await api.post(f"/assessments/{assessment_id}/complete", headers=p.staff())).status_code == 200
    return assessment_id  # type: ignore[no-any-return]


async def plan(p: Platform, pupils: list[uuid.UUID], kind: str, activity: str, targets: list[str]) -> str:
    staff = p.staff(Role.practitioner)
    body = {"kind": kind, "pupil_ids": [str(x) for x in pupils], "strand": "being", "targets": targets,
            "activities": [activity], "frequency": {"sessions_per_week": 2, "minutes": 30, "setting": "one-to-one"},
            "review_on": str(date.today() + timedelta(weeks=6))}
    # With an Idempotency-Key, as a client that retries safely sends it: the stored answer repeats
    # the plan's activities, so it is a copy of the child's data that erasure must reach too.
    draft = await p.clients["planning"].post("/plans", json=body, headers={**staff, "Idempotency-Key": str(uuid.uuid4())})
    assert draft.status_code == 201, draft.text
    plan_id = draft.json()["plan_id"]
    issued = await p.clients["planning"].post(f"/plans/{plan_id}/issue", json={"practitioner_id": "practitioner-7"},
                                              headers=staff)
    assert issued.status_code == 200, issued.text
    return plan_id  # type: ignore[no-any-return]


async def session(p: Platform, plan_id: str, activity: str, note: str) -> str:
    logged = await p.clients["planning"].post(f"/plans/{plan_id}/sessions", headers={
        **p.staff(Role.practitioner), "Idempotency-Key": str(uuid.uuid4())}, json={
        "held_on": str(date.today()), "minutes": 25, "activities_done": [activity], "note": note})
    assert logged.status_code == 201, logged.text
    return logged.json()["session_id"]  # type: ignore[no-any-return]


async def scored_in_planning(p: Platform, pupil: uuid.UUID) -> None:
    async def ready() -> bool:
        r = await p.clients["planning"].get(f"/pupils/{pupil}/suggestion", headers=p.staff(Role.practitioner))
        return r.status_code == 200
    await eventually(ready, timeout=60)


async def every_record(p: Platform) -> list[Any]:
    """Every record of every topic of this run (dead letters included), from the beginning."""
    reader = AIOKafkaConsumer(**kafka_options(p.settings, ADMIN), enable_auto_commit=False,
                              group_id=None, auto_offset_reset="earliest")
    await reader.start()
    try:
        topics = sorted(t for t in await reader.topics() if t.startswith(p.prefix))
        partitions = [tp for t in topics for tp in await partitions_of(reader, t)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        records: list[Any] = []
        async def behind() -> bool:
            return any([await reader.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for batch in (await reader.getmany(timeout_ms=1000)).values():
                records.extend(batch)
        return records
    finally:
        await reader.stop()


async def outboxes_empty(p: Platform) -> bool:
    for service in ("assessment", "planning", "consent", "reporting"):
        async with p.engine(service).connect() as conn:
            if await conn.scalar(text(f"SELECT count(*) FROM {service}.outbox")):
                return False
    return True


async def every_row(p: Platform, schema: str) -> list[tuple[str, str]]:
    """(table, row as text) for every row of every table of a schema, read as the schema's owner sees it."""
    async with p.engine(schema).connect() as conn:
        await conn.execute(text("SELECT set_config('flourish.trust_id', 'system', false)"))
        tables = (await conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY tablename"), {"s": schema})).scalars().all()
        rows: list[tuple[str, str]] = []
        for table in tables:
            found = await conn.execute(text(f'SELECT t::text FROM "{schema}"."{table}" t'))
            rows.extend((table, row[0]) for row in found)
        return rows


async def test_after_erasure_no_topic_and_no_table_holds_the_childs_data_in_clear_or_openable(platform: Platform) -> None:
    p = platform
    _, (erased, kept) = await class_of(p.clients["assessment"], p.tenant, 2, born=date(2016, 5, 1))
    marker = uuid.uuid4().hex[:10]
    secret = {  # free text that is only ever the erased child's
        "plan activity": f"Lego therapy with Ms Hart {marker}",
        "session activity": f"Talked about the move to Nana's {marker}",
        "session note": f"Said that dad shouts at night {marker}",
        "group note": f"Both children upset after the fire drill {marker}",
    }
    group_activity = f"Turn-taking board game {marker}-group"
    kept_note = f"Settled quickly today {marker}-kept"

    for pupil in (erased, kept):
        await assess(p, pupil, 1)
        await scored_in_planning(p, pupil)
    single = await plan(p, [erased], "individual", secret["plan activity"], ["being.21"])
    await session(p, single, secret["session activity"], secret["session note"])
    group = await plan(p, [erased, kept], "group", group_activity, ["being.12"])
    group_session = await session(p, group, group_activity, secret["group note"])
    own = await plan(p, [kept], "individual", group_activity, ["being.40"])
    kept_session = await session(p, own, group_activity, kept_note)
    note = await p.clients["planning"].get(f"/sessions/{group_session}/note", headers=p.staff(Role.practitioner))
    assert note.json()["note"] == secret["group note"], "a group session's note opens with every child's key"
    await eventually(lambda: outboxes_empty(p), timeout=60)

    # Before the erasure, as stored: notes and activities are ciphertext in every planning table.
    rows = await every_row(p, "planning")
    at_rest = [secret["session note"], kept_note, secret["plan activity"], secret["session activity"], group_activity]
    clear = {table for table, row in rows for text in at_rest if text in row}
    # Only the stored command answers (Idempotency-Key) repeat it, for a retry to find, and only for
    # idempotency_retention_s (tests/integration/kernel/test_stored_answers.py); erasure takes them too.
    assert clear <= {"idempotency_keys"}, f"free text stored in clear in {clear}"

    # The DPO erases the first child through the consent service's public API.
    async def erasure() -> bool:
        r = await p.clients["consent"].post(f"/pupils/{erased}/erasure", headers=p.staff(Role.dpo))
        assert r.status_code in (201, 404), r.text  # 404 until consent has consumed the enrolment
        return r.status_code == 201
    await eventually(erasure, timeout=60)

    async def planning_forgot() -> bool:
        async with p.engine("planning").connect() as conn:
            await conn.execute(text("SELECT set_config('flourish.trust_id', 'system', false)"))
            return not await conn.scalar(text("SELECT count(*) FROM planning.session_notes WHERE session_id = :s"),
                                         {"s": group_session})
    await eventually(planning_forgot, timeout=60)

    async def reporting_forgot() -> bool:
        async with p.engine("reporting").connect() as conn:
            await conn.execute(text("SELECT set_config('flourish.trust_id', 'system', false)"))
            return bool(await conn.scalar(text("SELECT count(*) FROM reporting.erasure_register WHERE pupil_id = :p"),
                                          {"p": erased}))
    await eventually(reporting_forgot, timeout=60)
    await eventually(lambda: outboxes_empty(p), timeout=60)

    # Every record of every topic, as raw bytes.
    records = await every_record(p)
    assert len(records) > 100
    # What any service can still get from the key service (a fresh client: no cache).
    key_service = DataKeyClient("http://consent", ServiceTokens(p.settings, "reporting").for_trust,
                                http=p.clients["consent"])
    kept_opened: dict[str, Any] = {}
    sealing = EventSealing(key_service)
    for record in records:
        raw = b"".join([record.key or b"", record.value or b"", *(v or b"" for _, v in record.headers or ())])
        for what, value in secret.items():
            assert value.encode() not in raw, f"the erased child's {what} is on {record.topic} in clear"
        headers = dict(record.headers or ())
        if record.value is None or not headers.get("ce_type"):
            continue
        body = orjson.loads(record.value)
        about = {str(body.get("pupil_id"))} | set(body.get(SEALED_KEY, {}).get("by_pupil", {}))
        if str(erased) in about:
            assert not PERSONAL_KEYS & set(body), f"{headers['ce_type']!r} holds the erased child's data in clear"
            if SEALED_KEY in body:
                # Openable? Not with any key the platform still has: the erased child's is gone.
                with pytest.raises(DataKeyDestroyed):
                    await key_service.key_for(p.tenant.trust_id, erased)
        if str(kept) in about and SEALED_KEY in body:
            model = model_for(headers["ce_type"].decode())
            event = await sealing.open(model, body, uuid.UUID(headers["ce_id"].decode()), p.tenant.trust_id)
            assert event is not None
            kept_opened.setdefault(model.__name__, event)
            if model.__name__ == "PlanIssued":
                assert erased not in event.pupil_ids, "an erased child is dropped from a group's members on opening"
    # Reporting, which consumed PupilErased, forgot the key it had cached.
    with pytest.raises(DataKeyDestroyed):
        await p.keyring("reporting").key_for(p.tenant.trust_id, erased)
    # The other child's data still opens: scores, plans and sessions.
    assert {"ObservationRecorded", "StrandScored", "PlanIssued", "SessionLogged"} <= set(kept_opened)

    # Every row of every table of every service's schema (the stored command answers too).
    for schema in ("assessment", "planning", "consent", "reporting"):
        for table, row in await every_row(p, schema):
            for what, value in secret.items():
                assert value not in row, f"the erased child's {what} is in {schema}.{table}"
    for schema in ("assessment", "planning"):
        async with p.engine(schema).connect() as conn:
            await conn.execute(text("SELECT set_config('flourish.trust_id', 'system', false)"))
            about_erased = (await conn.execute(text(
                f"SELECT event_type, data FROM {schema}.events WHERE data->>'pupil_id' = :p "
                f"OR data->'{SEALED_KEY}'->'by_pupil' ? :p"), {"p": str(erased)})).all()
        for event_type, data in about_erased:
            assert not PERSONAL_KEYS & set(data), f"a {event_type} about the erased child is in {schema}.events in clear"
    # The other child's own session note still opens; the group session's is gone with the erased child.
    kept_read = await p.clients["planning"].get(f"/sessions/{kept_session}/note", headers=p.staff(Role.practitioner))
    assert kept_read.status_code == 200 and kept_read.json()["note"] == kept_note
    gone = await p.clients["planning"].get(f"/sessions/{group_session}/note", headers=p.staff(Role.practitioner))
    assert gone.status_code == 404 or gone.json()["note"] is None
