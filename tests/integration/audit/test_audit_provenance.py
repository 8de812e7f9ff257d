"""The audit ledger knows who recorded each fact from the topic it came on, never from the fact.

Each service's audit facts travel on a topic only it may write (<prefix>audit.<service>). An
insider holding one service's Kafka write access (the webhook-sending reporting pods, say) tries
to put words in another's mouth, with a plain aiokafka producer: a read of a pupil's record on
the planning service's audit topic claiming the consent service recorded it; an audit fact on a
context's topic; an erasure (`PupilErased`, the consent service's) on the reporting topic. None
reaches the ledger: each is on the ledger consumer's dead-letter topic with its reason, and the
ledger's own reconciliation (what Kafka says it should hold) does not count them either. What the
rightful producers publish is recorded, with the topic's producer as its source, whatever
source the event claims.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.reporting.audit.audit_topic import ledger_events, read_topics
from shared.events.audit import PersonalDataRead
from shared.events.consent import PupilErased
from shared.events.envelope import Envelope, encode, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.topics import audit_fact_topic, dead_letter_topic, topic_owner
from shared.settings import Settings
from tests.integration.audit.test_reporting_ledger import ENTRIES, Reporting, consent_granted, reporting  # noqa: F401
from tests.integration.kernel.helpers import eventually

LEDGER = "reporting.audit-ledger"


def read_of(trust: uuid.UUID, academy: uuid.UUID, pupil: uuid.UUID, source: str, actor: str) -> Envelope[PersonalDataRead]:
    return Envelope(data=PersonalDataRead(pupil_id=pupil, actor=actor, data_categories=["profile"],
                                          route="/pupils/{pupil_id}", read_at=datetime.now(UTC)),
                    trust_id=trust, academy_id=academy, source=source)


async def send_raw(settings: Settings, topic: str, envelope: Envelope[Any]) -> None:
    """As an insider with write access to `topic` would (a compromised pod of the topic's owner, logged
    in as that service: the broker's ACLs let nobody else write it): a plain producer, nothing of Flourish's."""
    key, headers, value = encode(envelope)
    producer = AIOKafkaProducer(**kafka_options(settings, topic_owner(topic, settings.topic_prefix) or ADMIN))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def recorded(service: Reporting, trust: uuid.UUID) -> dict[str, dict[str, Any]]:
    """The trust's ledger entries' facts, by event id."""
    async with service.engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT body FROM {ENTRIES} WHERE trust_id = :t"), {"t": trust})
        facts = [json.loads(row.body)["fact"] for row in rows]
    return {fact["event_id"]: fact for fact in facts}


async def test_forged_audit_facts_never_reach_the_ledger_and_its_sources_come_from_the_topics(
    reporting: Reporting,  # noqa: F811 - the ledger tests' module fixture (the reporting service)
) -> None:
    trust, academy, pupil = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    settings, prefix = reporting.settings, reporting.prefix
    kafka = kafka_options(settings, ADMIN)
    refused_before = REGISTRY.get_sample_value("flourish_security_refusals_total",
                                               {"kind": "event_from_wrong_producer"}) or 0.0

    # What the rightful producers publish: planning's read on planning's audit topic (as its relay
    # sends it), and a consent decision on the consent topic that claims some other source.
    genuine = read_of(trust, academy, pupil, "/flourish/planning", "teacher-1")
    await send_raw(settings, audit_fact_topic("planning", prefix), genuine)
    decision = consent_granted(trust, academy, pupil, "2026-09-10")
    decision = Envelope(data=decision.data, trust_id=trust, academy_id=academy, source="/flourish/assessment")
    await send_raw(settings, topic_for("consent", prefix), decision)

    # The forgeries.
    claims_consent = read_of(trust, academy, pupil, "/flourish/consent", "teacher-2")
    await send_raw(settings, audit_fact_topic("planning", prefix), claims_consent)
    on_a_context_topic = read_of(trust, academy, pupil, "/flourish/reporting", "teacher-3")
    await send_raw(settings, topic_for("reporting", prefix), on_a_context_topic)
    erasure = Envelope(data=PupilErased(
        pupil_id=pupil, erasure_id=uuid.uuid4(), data_category="all", reason="right_to_erasure",
        requested_by="dpo-1", key_destroyed=True, erased_at=datetime.now(UTC),
    ), trust_id=trust, academy_id=academy, source="/flourish/consent")
    await send_raw(settings, topic_for("reporting", prefix), erasure)
    forged = {claims_consent.id: (
        f"flourish.audit.PersonalDataRead.v1 on {audit_fact_topic('planning', prefix)} claims another service "
        "recorded it, but only planning writes there"),
        on_a_context_topic.id: (f"flourish.audit.PersonalDataRead.v1 is an audit fact, but {prefix}reporting carries "
                                "reporting's events only"),
        erasure.id: f"flourish.consent.PupilErased.v1 is a consent event, but {prefix}reporting carries reporting's events only",
    }

    async def all_dead_lettered() -> dict[str, str] | None:
        reasons = {}
        async for record in read_topics(kafka, [dead_letter_topic(LEDGER, prefix)]):
            headers = dict(record.headers)
            reasons[headers.get("ce_id", b"").decode()] = headers["flourish_dlq_reason"].decode()
        return reasons if {str(i) for i in forged} <= set(reasons) else None

    reasons = await eventually(all_dead_lettered, timeout=60)
    assert {i: reasons[str(i)] for i in forged} == forged
    assert (REGISTRY.get_sample_value("flourish_security_refusals_total", {"kind": "event_from_wrong_producer"})
            or 0.0) - refused_before == len(forged)

    await reporting.until_recorded(trust, 2)
    facts = await recorded(reporting, trust)
    assert set(facts) == {str(genuine.id), str(decision.id)}, "nothing forged in the ledger"
    assert facts[str(genuine.id)]["source"] == "/flourish/planning"
    assert facts[str(decision.id)]["source"] == "/flourish/consent", "the topic's producer, not the claim"

    # The ledger's reconciliation with Kafka (what it should hold) skips the forgeries too.
    should_hold = (await ledger_events(kafka, prefix)).get(trust, {})
    assert set(should_hold) == {genuine.id, decision.id}
