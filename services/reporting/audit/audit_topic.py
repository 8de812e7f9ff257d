"""The audit topic keeps everything: no time-based deletion (retention.ms = -1).

In production the topic's KafkaTopic resource says so (Strimzi reconciles it); on the local stack
and in tests the kernel creates topics with the broker's defaults (seven days), so the reporting
service sets the audit topic's retention itself when it starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.events.envelope import topic_for

if TYPE_CHECKING:
    from shared.service import Runtime

log = logging.getLogger(__name__)

KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


class TopicConfigRefused(Exception):
    pass


async def keep_topic_forever(bootstrap_servers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=KEEP_FOREVER)])
    finally:
        await admin.close()
    for response in responses:
        for error_code, error_message, *_ in response.resources:
            if error_code:
                raise TopicConfigRefused(f"{topic}: error {error_code} {error_message or ''}".strip())


async def topic_retention(bootstrap_servers: str, topic: str) -> dict[str, str]:
    """The topic's effective retention settings (for tests and operators)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return {
        name: value
        for response in responses
        for resource in response.resources
        for name, value, *_ in resource[4]
        if name in KEEP_FOREVER
    }


async def keep_audit_topic(runtime: Runtime, reporting: Any, stop: asyncio.Event) -> None:
    """Background task: set the audit topic's retention once, retrying while Kafka is away (unless
    FLOURISH_AUDIT_KEEP_AUDIT_TOPIC_FOREVER is off: the reporting service's `.audit.settings`)."""
    if not reporting.audit.settings.keep_audit_topic_forever:
        return
    topic = topic_for("audit", runtime.settings.topic_prefix)
    delay = 0.5
    while not stop.is_set():
        try:
            await keep_topic_forever(runtime.settings.kafka_bootstrap_servers, topic)
            return
        except Exception as error:  # noqa: BLE001 - Kafka away or refusing: logged, and tried again until stopped
            log.warning("could not set the audit topic's retention yet",
                        extra={"topic": topic, "error_type": type(error).__name__})
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            delay = min(delay * 2, 30.0)
