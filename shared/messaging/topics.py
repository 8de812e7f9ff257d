"""The Kafka topics the platform uses; creating and deleting them is the admin identity's (local
launcher, tests, bench: flourish/kafka_acls.py makes a prefix's topics and ACLs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events.envelope import TOPIC_PREFIX, topic_for

CONTEXTS = ("assessment", "planning", "consent", "reporting", "audit")
DEFAULT_PARTITIONS = 6


def dead_letter_topic(consumer: str, prefix: str = TOPIC_PREFIX) -> str:
    """Each consumer has its own dead-letter topic, so a replay reaches only the consumer that failed."""
    return f"{prefix}dlq.{consumer}"


def consumer_group(consumer: str, prefix: str = TOPIC_PREFIX) -> str:
    """The consumer's Kafka group: the consumer's name on the platform's own prefix (deployed
    groups keep their names); under another prefix (a test run, a second platform on the same
    broker) a group of its own, or members reading other topics would join it and every one
    that comes or goes would stop all of them for a rebalance."""
    return consumer if prefix == TOPIC_PREFIX else f"{prefix}{consumer}"


def platform_topics(prefix: str = TOPIC_PREFIX) -> list[str]:
    return [topic_for(context, prefix) for context in CONTEXTS]


async def ensure_topics(
    kafka: Mapping[str, Any], topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS
) -> None:
    """Create the topics that do not exist yet, logged in as `kafka` says (the admin identity: no
    service may create topics). In production Strimzi's KafkaTopic resources own them (deploy/k8s);
    this is for the local stack, tests and bench."""
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Three copies where the cluster has three brokers (as durable as the operator's own
        # topics, and writable under min.insync.replicas=2); one on the local single node.
        cluster = await admin.describe_cluster()
        replicas = min(3, len(cluster["brokers"]))
        missing = [
            NewTopic(name=name, num_partitions=partitions, replication_factor=replicas)
            for name in dict.fromkeys(topics)
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another service created it first
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def delete_topics_with_prefix(kafka: Mapping[str, Any], prefix: str) -> None:
    """Delete every topic whose name starts with `prefix` (a test run's, a bench's), as admin."""
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        mine = [topic for topic in await admin.list_topics() if topic.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


class MissingTopics(RuntimeError):
    """Topics a service needs that nobody made (the admin step: `flourish infra up`, Strimzi)."""


async def require_topics(kafka: Mapping[str, Any], topics: Iterable[str]) -> None:
    """Refuse (MissingTopics, naming them) unless every topic exists and this identity may see it.
    A service never creates a topic: it checks, as itself, that the admin made them."""
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        visible = set(await admin.list_topics())
    finally:
        await admin.close()
    missing = [topic for topic in dict.fromkeys(topics) if topic not in visible]
    if missing:
        raise MissingTopics(f"Kafka topics missing (or not visible to this service's identity): {', '.join(missing)}; "
                            "the admin step makes them: `flourish infra up` locally, KafkaTopic resources in a cluster")
