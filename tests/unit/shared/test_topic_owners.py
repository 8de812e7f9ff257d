"""Every topic has one producer, and a consumer accepts from a topic only what that producer publishes."""

from __future__ import annotations

import pytest

from shared.events.registry import registered_types
from shared.messaging.provenance import producer_of, wrong_producer
from shared.messaging.topics import (
    SERVICES,
    audit_fact_topic,
    dead_letter_topic,
    legacy_audit_topic,
    platform_topics,
    topic_context,
    topic_owner,
    topics_of,
)

P = "t-1234."


@pytest.mark.parametrize(("topic", "owner"), [
    ("t-1234.assessment", "assessment"),
    ("t-1234.consent", "consent"),
    ("t-1234.audit.planning", "planning"),
    ("t-1234.audit.reporting", "reporting"),
    ("t-1234.audit.checkpoints", "reporting"),
    ("t-1234.dlq.reporting.audit-ledger", "reporting"),
    ("t-1234.dlq.planning.consent", "planning"),
    ("t-1234.audit", None),  # the legacy shared topic: nobody's
    ("t-1234.audit.someone", None),
    ("t-1234.audit.planning.x", None),
    ("t-1234.dlq.nobody.x", None),
    ("t-1234.dlq.consent", None),
    ("t-1234.sharing", None),
    ("flourish.assessment", None),  # another prefix
    ("t-1234.", None),
])
def test_topic_owner(topic, owner):
    assert topic_owner(topic, P) == owner


def test_the_platform_default_prefix_and_each_services_own_topics():
    assert topic_owner("flourish.audit.consent") == "consent"
    for service in SERVICES:
        assert topic_owner(audit_fact_topic(service, P), P) == service
        assert topic_owner(dead_letter_topic(f"{service}.x", P), P) == service
        assert topic_context(audit_fact_topic(service, P), P) == "audit"
        assert topic_context(f"{P}{service}", P) == service
    assert topic_context(dead_letter_topic("reporting.sharing", P), P) is None
    assert set(platform_topics(P)) == {f"{P}{s}" for s in SERVICES} | {f"{P}audit.{s}" for s in SERVICES}
    assert legacy_audit_topic(P) not in platform_topics(P)
    assert topics_of("audit", P) == [f"{P}audit.{s}" for s in SERVICES] and topics_of("consent", P) == [f"{P}consent"]


def test_every_registered_event_type_is_accepted_on_its_producers_topic_and_nowhere_else():
    for event_type, model in registered_types().items():
        producers = SERVICES if model.context == "audit" else (model.context,)
        for service in SERVICES:
            home = audit_fact_topic(service, P) if model.context == "audit" else f"{P}{service}"
            accepted = wrong_producer(home, event_type, model.context, f"/flourish/{service}", P) is None
            assert accepted == (service in producers), (event_type, home)
            other = f"{P}{service}" if model.context == "audit" else audit_fact_topic(service, P)
            assert wrong_producer(other, event_type, model.context, f"/flourish/{service}", P) is not None


def test_the_refusals_name_type_topic_and_owner_never_the_claimed_source():
    erased = "flourish.consent.PupilErased.v1"
    reason = wrong_producer(f"{P}assessment", erased, "consent", "/flourish/consent", P)
    assert reason == f"{erased} is a consent event, but {P}assessment carries assessment's events only"
    read = "flourish.audit.PersonalDataRead.v1"
    reason = wrong_producer(f"{P}audit.planning", read, "audit", "/flourish/consent<script>", P)
    assert reason is not None and "planning" in reason and read in reason and "script" not in reason
    assert wrong_producer(f"{P}audit.planning", read, "audit", "/flourish/planning", P) is None
    assert wrong_producer(f"{P}planning", read, "audit", "/flourish/planning", P) is not None
    assert wrong_producer(legacy_audit_topic(P), read, "audit", "/flourish/planning", P) is not None
    assert wrong_producer(dead_letter_topic("planning.x", P), read, "audit", "/flourish/planning", P) is not None
    assert producer_of(f"{P}audit.planning", P) == "/flourish/planning" and producer_of(f"{P}audit", P) is None
