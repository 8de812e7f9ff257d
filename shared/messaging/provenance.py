"""Who wrote an event: the topic it came from, never the event's own word.

Each topic has one producer (shared.messaging.topics.topic_owner), and the broker lets only that
service write it (its ACLs). So a consumer knows an event's producer from the topic, and accepts
an event only where its producer may have written it: a context's events on that context's topic,
audit facts on their producer's own audit-fact topic and naming that producer as their source.
Anything else (a `PupilErased` on the assessment topic, an audit fact on `audit.planning` that
says the consent service recorded it, an audit fact on a context's topic) was forged by whoever
could write the topic, or sent by a producer gone wrong: it is refused, never retried.

Reasons name the event type (a registered one), the topic and its owner: never a value of the
event, nor the source it claims (a header the forger chose).
"""

from __future__ import annotations

from shared.events.envelope import TOPIC_PREFIX
from shared.messaging.topics import AUDIT_CONTEXT, topic_context, topic_owner


def source_of_producer(service: str) -> str:
    """The CloudEvents source every event `service` publishes carries (shared.store.emission)."""
    return f"/flourish/{service}"


def producer_of(topic: str, prefix: str = TOPIC_PREFIX) -> str | None:
    """The source an event read from `topic` has for certain: the topic's one producer."""
    owner = topic_owner(topic, prefix)
    return source_of_producer(owner) if owner is not None else None


def wrong_producer(topic: str, event_type: str, context: str, source: str, prefix: str = TOPIC_PREFIX) -> str | None:
    """Why an event of `event_type` (of `context`, claiming `source`) read from `topic` cannot have
    come from the service that owns the topic; None when it can."""
    owner = topic_owner(topic, prefix)
    carried = topic_context(topic, prefix)
    if owner is None or carried is None:
        return f"{event_type} on {topic}: no service publishes events there"
    if context != carried:
        what = "an audit fact" if context == AUDIT_CONTEXT else f"a {context} event"
        whose = "audit facts" if carried == AUDIT_CONTEXT else "events"
        return f"{event_type} is {what}, but {topic} carries {owner}'s {whose} only"
    if carried == AUDIT_CONTEXT and source != source_of_producer(owner):
        return f"{event_type} on {topic} claims another service recorded it, but only {owner} writes there"
    return None
