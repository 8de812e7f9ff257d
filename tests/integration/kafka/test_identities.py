"""Issue 17 item 1, on the real local broker: every client authenticates (SASL/SCRAM-SHA-512) and
the standard authorizer holds each service to its ACLs (flourish/kafka_acls.py). What a compromised
pod could try with the assessment service's credentials, or with none, is refused; what the service
really does is allowed. Topic creation and configuration are the admin's alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from flourish.kafka_acls import Operation, describe_acls, kafka_acls, provision
from services.assessment import app as assessment
from services.reporting.audit.audit_topic import topic_retention
from shared.events.envelope import topic_for
from shared.messaging.clients import ADMIN, SERVICE_IDENTITIES, kafka_options
from shared.messaging.topics import MissingTopics, audit_fact_topic, consumer_group, legacy_audit_topic
from shared.settings import Settings

AUTHORIZATION_FAILED = 29
QUICK = {"request_timeout_ms": 5000}


def as_(settings: Settings, identity: str) -> dict[str, Any]:
    return kafka_options(settings, identity) | QUICK


@pytest.fixture
async def assessment_producer(stack_settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(**as_(stack_settings, "assessment"), acks="all")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def as_assessment_admin(stack_settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """The admin client API, logged in with the assessment service's credentials."""
    admin = AIOKafkaAdminClient(**as_(stack_settings, "assessment"))
    await admin.start()
    yield admin
    await admin.close()


async def test_an_anonymous_producer_is_refused(stack_settings: Settings, topic_prefix: str) -> None:
    anonymous = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap_servers, **QUICK)
    with pytest.raises(KafkaConnectionError):  # the SASL listener closes a client that does not log in
        await asyncio.wait_for(anonymous.start(), 30)
    await anonymous.stop()


async def test_a_wrong_password_is_refused(stack_settings: Settings) -> None:
    forged = as_(stack_settings, "assessment") | {"sasl_plain_password": "not-the-password"}
    producer = AIOKafkaProducer(**forged)
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), 30)
    await producer.stop()


async def test_a_service_is_refused_producing_to_another_contexts_topic(
    assessment_producer: AIOKafkaProducer, topic_prefix: str
) -> None:
    # A forged PupilErased on the consent topic, from the assessment service's pod.
    with pytest.raises(TopicAuthorizationFailedError):
        await assessment_producer.send_and_wait(topic_for("consent", topic_prefix), b"forged", key=b"pupil")
    # Nor an audit fact in another service's name, nor on the shared audit topic of old.
    for topic in (audit_fact_topic("planning", topic_prefix), legacy_audit_topic(topic_prefix)):
        with pytest.raises(TopicAuthorizationFailedError):
            await assessment_producer.send_and_wait(topic, b"forged", key=b"pupil")


async def test_a_service_produces_to_its_own_topics(assessment_producer: AIOKafkaProducer, topic_prefix: str) -> None:
    for topic in (topic_for("assessment", topic_prefix), audit_fact_topic("assessment", topic_prefix),
                  f"{topic_prefix}dlq.assessment.erasure"):
        metadata = await assessment_producer.send_and_wait(topic, b"{}", key=b"k")
        assert metadata.offset >= 0


async def test_a_service_is_refused_reading_a_topic_it_does_not_subscribe_to(
    stack_settings: Settings, topic_prefix: str
) -> None:
    # Assessment's consumers read the consent topic only; planning's topic is not theirs to read,
    # even under the service's own consumer group.
    reader = AIOKafkaConsumer(topic_for("planning", topic_prefix), **as_(stack_settings, "assessment"),
                              group_id=consumer_group("assessment.erasure", topic_prefix), auto_offset_reset="earliest")

    async def poll() -> None:
        await reader.start()
        await reader.getmany(timeout_ms=5000)

    with pytest.raises(TopicAuthorizationFailedError):
        await poll()
    await reader.stop()


async def test_a_service_reads_what_it_subscribes_to(stack_settings: Settings, topic_prefix: str) -> None:
    topic = topic_for("consent", topic_prefix)
    admin_producer = AIOKafkaProducer(**as_(stack_settings, ADMIN), acks="all")
    await admin_producer.start()
    try:
        await admin_producer.send_and_wait(topic, b"hello", key=b"k", partition=0)
    finally:
        await admin_producer.stop()
    reader = AIOKafkaConsumer(topic, **as_(stack_settings, "assessment"),
                              group_id=consumer_group("assessment.erasure", topic_prefix), auto_offset_reset="earliest")
    await reader.start()
    try:
        record = await asyncio.wait_for(reader.getone(), 30)
        await reader.commit()  # READ on its own consumer group
    finally:
        await reader.stop()
    assert record.value == b"hello"


async def test_a_service_is_refused_creating_or_deleting_a_topic(
    as_assessment_admin: AIOKafkaAdminClient, topic_prefix: str
) -> None:
    created = await as_assessment_admin.create_topics([NewTopic(f"{topic_prefix}planted", 1, 1)])
    assert [error for _, error, *_ in created.topic_errors] == [AUTHORIZATION_FAILED]
    deleted = await as_assessment_admin.delete_topics([topic_for("consent", topic_prefix)])
    assert [error for _, error in deleted.topic_error_codes] == [AUTHORIZATION_FAILED]
    assert f"{topic_prefix}planted" not in await as_assessment_admin.list_topics()


@pytest.mark.parametrize("identity", ["assessment", "reporting"])
async def test_no_service_can_shorten_the_audit_topics_retention(
    stack_settings: Settings, topic_prefix: str, identity: str
) -> None:
    audit = audit_fact_topic(identity, topic_prefix)  # the one audit topic it may write
    admin = AIOKafkaAdminClient(**as_(stack_settings, identity))
    await admin.start()
    try:
        [response] = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, audit,
                                                               configs={"retention.ms": "1"})])
    finally:
        await admin.close()
    assert [error for error, *_ in response.resources] == [AUTHORIZATION_FAILED]
    # The admin step kept it forever, and it still is.
    assert await topic_retention(kafka_options(stack_settings, ADMIN), audit) == {"retention.ms": "-1",
                                                                                 "retention.bytes": "-1"}


async def test_the_broker_holds_exactly_the_table_and_applying_it_again_changes_nothing(
    stack_settings: Settings, topic_prefix: str
) -> None:
    await provision(stack_settings, topic_prefix)  # the fixture applied it once already
    table = kafka_acls(topic_prefix)
    for identity in SERVICE_IDENTITIES:
        held = [b for b in await describe_acls(stack_settings, identity) if b.name.startswith(topic_prefix)]
        assert held == table[identity]


def test_the_table_grants_no_topic_or_cluster_administration() -> None:
    administration = {Operation.CREATE, Operation.DELETE, Operation.ALTER, Operation.ALTER_CONFIGS}
    for identity, bindings in kafka_acls("p.").items():
        assert not {b.operation for b in bindings} & administration, identity
        written = {b.name for b in bindings if b.operation == Operation.WRITE}
        others = {topic_for(context, "p.") for context in SERVICE_IDENTITIES if context != identity}
        assert not written & others, f"{identity} may write another context's topic"


async def test_a_service_refuses_to_start_naming_a_missing_topic(stack_settings: Settings, tmp_path: Path) -> None:
    unprovisioned = f"test.{uuid.uuid4().hex[:10]}."
    settings = stack_settings.model_copy(update={
        "topic_prefix": unprovisioned, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json"})
    app = assessment.app(settings)
    with pytest.raises(MissingTopics, match=f"{unprovisioned}assessment"):
        async with app.router.lifespan_context(app):
            pass
