"""Who may do what on Kafka: one table, computed from the four ServiceSpecs, and the admin step that
makes a topic prefix's topics and applies the table to the broker.

Each service logs in as itself. It may WRITE its own context's topic, its own audit-fact topic, and
the dead-letter topics of its own consumers; READ the topics its consumers subscribe to (their
dead letters too, for a rebuild) and its consumer groups; nothing else: no CREATE, DELETE, ALTER
or ALTER_CONFIGS on a topic or on the cluster. Topics, their retention and these ACLs belong to
`admin` (the launcher `flourish infra up`, the tests' fixtures, bench set-up; Strimzi's KafkaTopic
and KafkaUser resources in a cluster: deploy/k8s).

Every pattern is LITERAL: the readers that replay history (read-model rebuild, ledger recovery,
the witness, the erasure-register check) read without a consumer group, so no group name is
generated at run time and no PREFIXED pattern is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactArray, CompactString, Int8, Int16, Int32, Schema, TaggedFields

from shared.events.envelope import TOPIC_PREFIX, topic_for
from shared.messaging.clients import ADMIN, SERVICE_IDENTITIES, kafka_options
from shared.messaging.topics import (
    AUDIT_WITNESS,
    CONTEXTS,
    DEFAULT_PARTITIONS,
    audit_fact_topic,
    consumer_group,
    dead_letter_topic,
    legacy_audit_topic,
    topics_of,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

# The reporting service's witness: every signed checkpoint of the audit ledger (services/reporting/audit/audit_topic.py).
CHECKPOINTS = AUDIT_WITNESS
# Kept forever (retention.ms = retention.bytes = -1): the audit facts and the ledger's witness.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


class ResourceType(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class PatternType(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11


ALLOW = 3
ANY_HOST = "*"


@dataclass(frozen=True, order=True)
class Binding:
    """One ALLOW ACL of an identity (its principal is `User:<identity>`), from any host."""

    resource_type: ResourceType
    name: str
    pattern_type: PatternType
    operation: Operation


def _spec(service: str) -> Any:
    return importlib.import_module(f"services.{service}.app").SPEC


def _consumers(service: str) -> list[tuple[str, list[str]]]:
    """(the consumer's full name, as IdempotentConsumer names it; the contexts it reads)."""
    return [(f"{service}.{spec.name}", list(spec.contexts)) for spec in _spec(service).consumers]


# Topics a service reads without a consumer group, besides what its consumers subscribe to.
_GROUPLESS_READS: dict[str, Sequence[str]] = {
    # The erasure-register check at start (services/consent/restore.py) reads the consent topic.
    "consent": ("consent",),
    # The read-model rebuild and the ledger's recovery replay every context; the witness is read back.
    "reporting": (*CONTEXTS, CHECKPOINTS),
}
# Topics a service writes besides its own context's and the audit facts.
_EXTRA_WRITES: dict[str, Sequence[str]] = {"reporting": (CHECKPOINTS,)}


def kafka_acls(prefix: str = TOPIC_PREFIX) -> dict[str, list[Binding]]:
    """Each service identity's ACL bindings for the platform whose topics start with `prefix`."""
    table: dict[str, list[Binding]] = {}
    for service in SERVICE_IDENTITIES:
        consumers = _consumers(service)
        writes = [topic_for(service, prefix), audit_fact_topic(service, prefix),
                  *(topic_for(context, prefix) for context in _EXTRA_WRITES.get(service, ())),
                  *(dead_letter_topic(name, prefix) for name, _ in consumers)]
        reads = [*(topic for _, contexts in consumers for context in contexts for topic in topics_of(context, prefix)),
                 *(topic_for(context, prefix) for context in _GROUPLESS_READS.get(service, ())),
                 *(dead_letter_topic(name, prefix) for name, _ in consumers)]
        if service == "reporting":  # recovery and reconciliation read the shared audit topic's history
            reads.append(legacy_audit_topic(prefix))
        groups = [consumer_group(name, prefix) for name, _ in consumers]
        bindings = {
            *(Binding(ResourceType.TOPIC, topic, PatternType.LITERAL, op)
              for topic in writes for op in (Operation.WRITE, Operation.DESCRIBE)),
            *(Binding(ResourceType.TOPIC, topic, PatternType.LITERAL, op)
              for topic in reads for op in (Operation.READ, Operation.DESCRIBE)),
            *(Binding(ResourceType.GROUP, group, PatternType.LITERAL, Operation.READ) for group in groups),
        }
        table[service] = sorted(bindings)
    return table


def platform_topics(prefix: str = TOPIC_PREFIX) -> list[str]:
    """Every topic the platform uses under `prefix`: the contexts', the audit witness's, each
    producer's audit facts and each consumer's dead letters."""
    topics = [topic_for(context, prefix) for context in (*CONTEXTS, CHECKPOINTS)]
    topics += [audit_fact_topic(service, prefix) for service in SERVICE_IDENTITIES]
    topics += [dead_letter_topic(name, prefix) for service in SERVICE_IDENTITIES for name, _ in _consumers(service)]
    return list(dict.fromkeys(topics))


def kept_forever(prefix: str = TOPIC_PREFIX) -> list[str]:
    return [topic_for(CHECKPOINTS, prefix), *(audit_fact_topic(service, prefix) for service in SERVICE_IDENTITIES)]


# --- the admin step --------------------------------------------------------------------------


class AclRefused(RuntimeError):
    pass


async def provision(settings: Settings, prefix: str | None = None, *, partitions: int = DEFAULT_PARTITIONS) -> None:
    """As admin: create the prefix's topics that do not exist, keep the audit topics forever, and
    apply the ACL table (idempotent: an ACL that exists already is left as it is)."""
    prefix = settings.topic_prefix if prefix is None else prefix
    admin = AIOKafkaAdminClient(**kafka_options(settings, ADMIN))
    await admin.start()
    try:
        await create_topics(admin, platform_topics(prefix), partitions)
        await keep_forever(admin, kept_forever(prefix))
        if settings.kafka_security_protocol == "PLAINTEXT":
            # A broker nobody logs in to has no principals to grant to (compose.yaml's demo broker);
            # production refuses PLAINTEXT at start.
            log.warning("kafka: PLAINTEXT broker, no ACLs applied", extra={"prefix": prefix})
            return
        table = kafka_acls(prefix)
        await create_acls(admin, table)
        await _until_visible(admin, table)
    finally:
        await admin.close()


async def _until_visible(admin: AIOKafkaAdminClient, table: dict[str, list[Binding]], timeout_s: float = 15.0) -> None:
    """The controller has the ACLs when CreateAcls answers; the broker's authorizer a moment later."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    for identity, bindings in table.items():
        while not set(bindings) <= set(await _described(admin, identity)):
            if asyncio.get_running_loop().time() > deadline:
                raise AclRefused(f"the broker does not show {identity}'s ACLs after {timeout_s:.0f}s")
            await asyncio.sleep(0.05)


async def deprovision(settings: Settings, prefix: str) -> None:
    """As admin: remove a prefix's ACLs and topics (a test run's, a bench's)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings, ADMIN))
    await admin.start()
    try:
        await delete_acls(admin, kafka_acls(prefix))
        mine = [topic for topic in await admin.list_topics() if topic.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def create_topics(admin: AIOKafkaAdminClient, topics: Iterable[str], partitions: int = DEFAULT_PARTITIONS) -> None:
    existing = set(await admin.list_topics())
    # Three copies where the cluster has three brokers; one on the local single node.
    replicas = min(3, len((await admin.describe_cluster())["brokers"]))
    missing = [NewTopic(name=name, num_partitions=partitions, replication_factor=replicas)
               for name in dict.fromkeys(topics) if name not in existing]
    if missing:
        with contextlib.suppress(TopicAlreadyExistsError):  # another launcher made it first
            await admin.create_topics(missing)


async def keep_forever(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> None:
    responses = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs=KEEP_FOREVER) for topic in topics])
    for response in responses:
        for error_code, error_message, *_ in response.resources:
            if error_code:
                raise AclRefused(f"retention of the audit topics: error {error_code} {error_message or ''}".strip())


# aiokafka has the ACL requests only in versions Kafka 4 no longer accepts (CreateAcls v0-v1,
# DescribeAcls v0, DeleteAcls v0-v1: KIP-896); these are the flexible v2 ones, which Kafka 2.5+ takes.

_ACL = (("principal", CompactString("utf-8")), ("host", CompactString("utf-8")),
        ("operation", Int8), ("permission_type", Int8))


class _CreateAclsResponse_v2(Response):
    API_KEY = 30
    API_VERSION = 2
    SCHEMA = Schema(("throttle_time_ms", Int32),
                    ("results", CompactArray(("error_code", Int16), ("error_message", CompactString("utf-8")),
                                             ("tags", TaggedFields))),
                    ("tags", TaggedFields))


class _CreateAclsRequest_v2(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 30
    API_VERSION = 2
    RESPONSE_TYPE = _CreateAclsResponse_v2
    SCHEMA = Schema(("creations", CompactArray(("resource_type", Int8), ("resource_name", CompactString("utf-8")),
                                               ("pattern_type", Int8), *_ACL, ("tags", TaggedFields))),
                    ("tags", TaggedFields))


class _CreateAcls(Request[_CreateAclsRequest_v2]):
    API_KEY = 30

    def __init__(self, creations: list[tuple[Any, ...]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[_CreateAclsRequest_v2]) -> _CreateAclsRequest_v2:
        return request_struct_class(self._creations, {})


_FILTER = (("resource_type", Int8), ("resource_name", CompactString("utf-8")), ("pattern_type", Int8), *_ACL)


class _DeleteAclsResponse_v2(Response):
    API_KEY = 31
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("filter_results", CompactArray(
            ("error_code", Int16), ("error_message", CompactString("utf-8")),
            ("matching_acls", CompactArray(("error_code", Int16), ("error_message", CompactString("utf-8")),
                                           ("resource_type", Int8), ("resource_name", CompactString("utf-8")),
                                           ("pattern_type", Int8), *_ACL, ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields))


class _DeleteAclsRequest_v2(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 31
    API_VERSION = 2
    RESPONSE_TYPE = _DeleteAclsResponse_v2
    SCHEMA = Schema(("filters", CompactArray(*_FILTER, ("tags", TaggedFields))), ("tags", TaggedFields))


class _DeleteAcls(Request[_DeleteAclsRequest_v2]):
    API_KEY = 31

    def __init__(self, filters: list[tuple[Any, ...]]) -> None:
        self._filters = filters

    def build(self, request_struct_class: type[_DeleteAclsRequest_v2]) -> _DeleteAclsRequest_v2:
        return request_struct_class(self._filters, {})


class _DescribeAclsResponse_v2(Response):
    API_KEY = 29
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32), ("error_code", Int16), ("error_message", CompactString("utf-8")),
        ("resources", CompactArray(("resource_type", Int8), ("resource_name", CompactString("utf-8")),
                                   ("pattern_type", Int8), ("acls", CompactArray(*_ACL, ("tags", TaggedFields))),
                                   ("tags", TaggedFields))),
        ("tags", TaggedFields))


class _DescribeAclsRequest_v2(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 29
    API_VERSION = 2
    RESPONSE_TYPE = _DescribeAclsResponse_v2
    SCHEMA = Schema(*_FILTER, ("tags", TaggedFields))


class _DescribeAcls(Request[_DescribeAclsRequest_v2]):
    API_KEY = 29

    def __init__(self, principal: str) -> None:
        self._principal = principal

    def build(self, request_struct_class: type[_DescribeAclsRequest_v2]) -> _DescribeAclsRequest_v2:
        # Every ACL of the principal: ANY resource type (1), any name (null), ANY pattern (1), ANY op (1), ANY permission (1).
        return request_struct_class(1, None, 1, self._principal, None, 1, 1, {})


def _rows(table: dict[str, list[Binding]]) -> list[tuple[Any, ...]]:
    return [(int(b.resource_type), b.name, int(b.pattern_type), f"User:{identity}", ANY_HOST, int(b.operation), ALLOW, {})
            for identity, bindings in table.items() for b in bindings]


async def create_acls(admin: AIOKafkaAdminClient, table: dict[str, list[Binding]]) -> None:
    rows = _rows(table)
    if not rows:
        return
    response = await admin._send_request(_CreateAcls(rows))  # noqa: SLF001  (no public ACL API in aiokafka)
    failed = [(code, message) for code, message, _ in response.results if code]
    if failed:
        raise AclRefused(f"{len(failed)} ACLs refused, first: error {failed[0][0]} {failed[0][1] or ''}".strip())


async def delete_acls(admin: AIOKafkaAdminClient, table: dict[str, list[Binding]]) -> None:
    rows = _rows(table)
    if rows:
        await admin._send_request(_DeleteAcls(rows))  # noqa: SLF001


async def describe_acls(settings: Settings, identity: str) -> list[Binding]:
    """The ALLOW ACLs the broker holds for `identity` (tests compare them with the table)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings, ADMIN))
    await admin.start()
    try:
        return await _described(admin, identity)
    finally:
        await admin.close()


async def _described(admin: AIOKafkaAdminClient, identity: str) -> list[Binding]:
    response = await admin._send_request(_DescribeAcls(f"User:{identity}"))  # noqa: SLF001
    if response.error_code:
        raise AclRefused(f"describe ACLs: error {response.error_code} {response.error_message or ''}".strip())
    return sorted(Binding(ResourceType(rtype), name, PatternType(ptype), Operation(op))
                  for rtype, name, ptype, acls, _ in response.resources
                  for _, _, op, permission, _ in acls if permission == ALLOW)
