"""An insider who can write one context's topic cannot make the platform act on another's events.

The four services run in process on the real PostgreSQL and Kafka, on topics of the test's own. A
pupil is enrolled, observed, assessed and scored. Then, as someone holding the assessment
service's Kafka write access would (raw aiokafka, no Flourish code on the way), a `PupilErased`
(the consent service's event) is put on the assessment topic. Every consumer of that topic refuses
it before any handler runs: it lands on each consumer's dead-letter topic with a reason naming
the type, the topic and its owner, `flourish_security_refusals_total` counts it, the ops page
shows it, and the pupil's data is all still there. An operator who replays the dead letter as it
was (back onto the topic it came from) gets it refused again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from services.reporting.audit.audit_topic import read_topics
from shared.auth import DevIssuer, Role
from shared.events.consent import PupilErased
from shared.events.envelope import Envelope, encode, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.topics import dead_letter_topic, topic_owner
from tests.integration.assessment.helpers import Tenant, class_of
from tests.integration.kernel.helpers import eventually
from tests.integration.services.in_process import four_services, settings_for
from tests.integration.services.test_sealed_payloads import DELIVERY, Platform, assess, scored_in_planning

# Every consumer group that reads the assessment topic (ConsumerSpecs with "assessment").
ASSESSMENT_READERS = ("consent.roster", "planning.scores", "reporting.readmodels")
KIND = "event_from_wrong_producer"


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    async with AsyncExitStack() as stack:
        services = await four_services(stack, settings, DELIVERY)
        yield Platform(services.apps, services.clients, Tenant(DevIssuer(settings)), settings, topic_prefix)


def refusals() -> float:
    return REGISTRY.get_sample_value("flourish_security_refusals_total", {"kind": KIND}) or 0.0


async def dead_letters(p: Platform, consumer: str) -> list[Any]:
    """Every record on the consumer's dead-letter topic so far."""
    topic = dead_letter_topic(consumer, p.prefix)
    return [record async for record in read_topics(kafka_options(p.settings, ADMIN), [topic])]


async def send_raw(p: Platform, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    """As an insider with write access to `topic` would (a compromised pod of the topic's owner, logged
    in as that service: the broker's ACLs let nobody else write it): a plain producer, nothing of Flourish's."""
    producer = AIOKafkaProducer(**kafka_options(p.settings, topic_owner(topic, p.prefix) or ADMIN))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def pupil_data_intact(p: Platform, pupil: uuid.UUID) -> None:
    staff = p.staff()
    roster = await p.clients["assessment"].get(f"/pupils/{pupil}", headers=staff)
    assert roster.status_code == 200, roster.text
    observations = await p.clients["assessment"].get(f"/pupils/{pupil}/observations", headers=staff)
    assert observations.status_code == 200 and observations.json()["items"], observations.text
    suggestion = await p.clients["planning"].get(f"/pupils/{pupil}/suggestion", headers=p.staff(Role.practitioner))
    assert suggestion.status_code == 200, suggestion.text
    keyring = p.keyring("planning")
    keyring.forget(pupil)  # ask the consent service afresh: the pupil's key is not destroyed
    await keyring.key_for(p.tenant.trust_id, pupil)


async def test_a_pupil_erased_forged_onto_the_assessment_topic_is_refused_by_every_consumer_and_counted(
    platform: Platform,
) -> None:
    p = platform
    _, (pupil,) = await class_of(p.clients["assessment"], p.tenant, 1)
    await assess(p, pupil, 1)
    await scored_in_planning(p, pupil)
    await pupil_data_intact(p, pupil)
    before = refusals()

    # The consent service's event, well formed and claiming the consent service as its source,
    # but on the assessment topic: only the assessment service may write there.
    forged: Envelope[PupilErased] = Envelope(data=PupilErased(
        pupil_id=pupil, erasure_id=uuid.uuid4(), data_category="all", reason="right_to_erasure",
        requested_by="dpo-1", key_destroyed=True, erased_at=datetime.now(UTC),
    ), trust_id=p.tenant.trust_id, academy_id=p.tenant.academy_id, source="/flourish/consent")
    key, headers, value = encode(forged)
    assessment_topic = topic_for("assessment", p.prefix)
    await send_raw(p, assessment_topic, key, value, headers)

    reason = (f"flourish.consent.PupilErased.v1 is a consent event, but {assessment_topic} carries "
              "assessment's events only")

    async def refused_by_all() -> dict[str, Any] | None:
        found = {}
        for consumer in ASSESSMENT_READERS:
            letters = [r for r in await dead_letters(p, consumer) if dict(r.headers).get("ce_id") == str(forged.id).encode()]
            if not letters:
                return None
            found[consumer] = letters
        return found

    letters = await eventually(refused_by_all, timeout=60)
    for consumer, [letter] in letters.items():
        dlq = dict(letter.headers)
        assert dlq["flourish_dlq_reason"].decode() == reason, consumer
        assert dlq["flourish_dlq_attempts"] == b"0", "refused at once, never retried"
        assert dlq["flourish_dlq_source_topic"].decode() == assessment_topic
        assert letter.value == value and letter.key == key, "the dead letter keeps the record as it came"
    assert refusals() - before == len(ASSESSMENT_READERS)
    await pupil_data_intact(p, pupil)

    # The ops page says so, in words, on the reporting row (this process's own counters).
    ops = (await p.clients["reporting"].get("/ops.json")).json()
    reporting = next(row for row in ops if row["name"] == "reporting")
    assert reporting["refused"][KIND] >= len(ASSESSMENT_READERS)
    assert "refused: event from wrong producer" in reporting["attention"]
    page = await p.clients["reporting"].get("/ops")
    assert f'<span class="warn">refused {KIND}: ' in page.text

    # An operator replays the dead letter as it was, back onto its source topic: refused again.
    letter = letters["planning.scores"][0]
    original = [(name, v) for name, v in letter.headers if not name.startswith("flourish_dlq_")]
    await send_raw(p, assessment_topic, letter.key, letter.value, original)

    async def refused_twice() -> bool:
        again = [r for r in await dead_letters(p, "planning.scores") if dict(r.headers).get("ce_id") == str(forged.id).encode()]
        return len(again) == 2

    await eventually(refused_twice, timeout=60)
    await pupil_data_intact(p, pupil)
