"""The Kafka topics the platform uses; creating and deleting them is the admin identity's (local
launcher, tests, bench: flourish/kafka_acls.py makes a prefix's topics and ACLs)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events.envelope import TOPIC_PREFIX, topic_for

SERVICES = ("assessment", "planning", "consent", "reporting")
"""The services, each the one producer of its own context's topic and of its own audit facts."""
CONTEXTS = SERVICES
"""The bounded contexts with a topic of their own: each service's context bears its name."""
AUDIT_CONTEXT = "audit"
"""Audit facts (shared.events.audit) are every service's: each producer has its own topic of them."""
AUDIT_WITNESS = f"{AUDIT_CONTEXT}.checkpoints"
"""The audit ledger's witness topic (services.reporting.audit.audit_topic): the reporting service's."""
DEFAULT_PARTITIONS = 6


def audit_fact_topic(service: str, prefix: str = TOPIC_PREFIX) -> str:
    """The topic of the audit facts `service` records: its own, so the topic, which only that
    service may write, says who recorded a fact (not the fact's own claim)."""
    return f"{prefix}{AUDIT_CONTEXT}.{service}"


def audit_fact_topics(prefix: str = TOPIC_PREFIX) -> list[str]:
    return [audit_fact_topic(service, prefix) for service in SERVICES]


def legacy_audit_topic(prefix: str = TOPIC_PREFIX) -> str:
    """The one topic every service's audit facts went to before each had its own. Nobody writes
    it any more and no consumer reads it live; the ledger's recovery and reconciliation still
    read its history (audit_topic.py, recover.py)."""
    return topic_for(AUDIT_CONTEXT, prefix)


def topics_of(context: str, prefix: str = TOPIC_PREFIX) -> list[str]:
    """The topics a consumer of a context's events subscribes to: the context's topic, or, for
    audit facts, every producer's audit-fact topic."""
    return audit_fact_topics(prefix) if context == AUDIT_CONTEXT else [topic_for(context, prefix)]


@functools.lru_cache(maxsize=1024)  # every record a consumer reads asks: a handful of topics
def topic_owner(topic: str, prefix: str = TOPIC_PREFIX) -> str | None:
    """The service that alone may write `topic`: a context's topic is its service's, an
    audit-fact topic its producer's, a dead-letter topic its consumer's service's, the audit
    witness the reporting service's. None for any other topic (the legacy shared audit topic
    included): no service may write it, and nothing read from it is any service's."""
    if not topic.startswith(prefix):
        return None
    name = topic[len(prefix):]
    if name in CONTEXTS:
        return name
    if name == AUDIT_WITNESS:
        return "reporting"
    kind, _, rest = name.partition(".")
    if kind == AUDIT_CONTEXT and rest in SERVICES:
        return rest
    if kind == "dlq":
        service, _, consumer = rest.partition(".")
        return service if service in SERVICES and consumer else None
    return None


@functools.lru_cache(maxsize=1024)
def topic_context(topic: str, prefix: str = TOPIC_PREFIX) -> str | None:
    """The context whose events `topic` carries (None: it carries no events a consumer applies,
    as dead letters and the witness do not, or no service owns it)."""
    owner = topic_owner(topic, prefix)
    if owner is None:
        return None
    name = topic[len(prefix):]
    if name == owner:
        return owner
    if name == f"{AUDIT_CONTEXT}.{owner}":
        return AUDIT_CONTEXT
    return None


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
    """Every event topic: each context's, each producer's audit facts. (Each consumer's dead
    letters are named by dead_letter_topic; the audit witness by AUDIT_WITNESS, one partition.)"""
    return [topic_for(context, prefix) for context in CONTEXTS] + audit_fact_topics(prefix)


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
