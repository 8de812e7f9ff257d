"""Hostile records on every topic every consumer reads: garbage, a header that is not UTF-8, a
tombstone, an unknown type, invalid data, JSON nested past any parser's depth, a record close to
the broker's largest, an event that claims another trust for a known pupil and one that puts a
known academy in another trust. Each goes to the consumer's dead-letter topic with
its reason, nothing of it is applied, and the valid event after them is.

The consumers are found from each service as it runs (its Runtime), so a new consumer, or a new
topic an existing one reads, is covered without touching this test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI

from services.assessment.app import app as assessment_app
from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.consent.app import app as consent_app
from services.planning.app import app as planning_app
from services.reporting.app import app as reporting_app
from services.reporting.readmodels import rebuild as rebuild_read_models
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.topics import dead_letter_topic, topics_of
from shared.settings import Settings
from tests.conftest import counter
from tests.integration.hostile.helpers import (
    EXPECTED_REASON,
    Sent,
    Tenancy,
    about_pupils,
    applied,
    handled,
    hostile_sequence,
    publish,
    roster_rows,
    rows_of_academy_in_trust,
    rows_of_trust,
    sample_type,
    seed_rosters,
)
from tests.integration.kernel.helpers import eventually, read_topic

SERVICES: dict[str, Callable[[Settings], FastAPI]] = {
    "assessment": assessment_app,
    "planning": planning_app,
    "consent": lambda s: consent_app(ConsentServiceSettings(kernel=s, consent=ConsentSettings(run_retention_scheduler=False))),
    "reporting": reporting_app,
}
# Services whose read models can be rebuilt from the topics.
REBUILDS: dict[str, Callable[[Settings, Any], Awaitable[Any]]] = {"reporting": rebuild_read_models}


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_every_consumer_dead_letters_hostile_records_and_applies_the_valid_event_after_them(
    service, service_settings, raw_producer, engine
):
    app = SERVICES[service](service_settings)
    prefix = service_settings.topic_prefix
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        schema = runtime.spec.tables.schema
        readers = {consumer.name: [str(c) for c in spec.contexts]
                   for spec, consumer in zip(runtime.spec.consumers, runtime.consumers, strict=True)}
        consumers = {consumer.name: consumer for consumer in runtime.consumers}
        assert consumers, f"{service} has no consumers to test"
        for name, consumer in consumers.items():
            assert consumer.roster is not None, f"{name} does not say where it knows each pupil's trust from (roster)"

        t = Tenancy()
        rosters = await seed_rosters(engine, raw_producer, prefix, t, list(consumers.values()))
        known = {(t.pupil_p, t.trust_a, t.academy_a), (t.pupil_q, t.trust_b, t.academy_b)}
        # Each check binds the loop's values as defaults, so it cannot see a later iteration's.
        for roster in rosters:
            await eventually(lambda roster=roster: _equal(roster_rows(engine, roster, [t.pupil_p, t.pupil_q]), known))
        trust_b_before = await rows_of_trust(engine, schema, t.trust_b)
        mismatched = {name: counter("flourish_dead_lettered", consumer=name, cause="tenant_mismatch") for name in consumers}

        sent: list[Sent] = []
        for context in sorted({c for contexts in readers.values() for c in contexts}):
            on_topic = [consumers[name] for name, contexts in readers.items() if context in contexts]
            wrong = sorted(set().union(*(about_pupils(c, context) for c in on_topic)), key=lambda m: m.event_type)
            valid = sorted({sample_type(c, context) for c in on_topic}, key=lambda m: m.event_type)
            sent += await publish(raw_producer, prefix, context, hostile_sequence(context, wrong, valid, t))

        # Every consumer applies the valid events it handles, after the hostile ones before them.
        for name, consumer in consumers.items():
            mine = [s for s in sent if s.topic in _topics(readers[name], prefix)]
            valid = {s.record.event_id for s in mine if s.record.kind == "valid" and s.record.model in handled(consumer)}
            assert valid, f"{name} was given no valid event"
            await eventually(lambda name=name, valid=valid: _equal(applied(engine, schema, name, list(valid)), valid), timeout=90)

            # Each hostile record it reads is in its dead-letter topic, with its reason; nothing else is.
            hostile = {(s.topic, s.offset): s.record for s in mine if s.record.kind != "valid"
                       and (not s.record.kind.startswith("wrong-") or s.record.model in handled(consumer))}
            letters = await read_topic(kafka_options(service_settings, ADMIN),
                                       dead_letter_topic(name, prefix), expected=len(hostile), timeout=60)
            got = {(_header(r, "flourish_dlq_source_topic"), int(_header(r, "flourish_dlq_source_offset"))): r
                   for r in letters}
            assert got.keys() == hostile.keys(), (name, sorted(got), sorted(hostile))
            for where, record in hostile.items():
                reason = _header(got[where], "flourish_dlq_reason")
                assert EXPECTED_REASON[record.kind] in reason, (name, record.kind, reason)
                if record.kind.startswith("wrong-"):
                    assert _header(got[where], "flourish_dlq_attempts") == "1", "a tenant mismatch is never retried"
                if record.kind == "oversized":
                    assert got[where].value == b"", "an oversized record is not copied to the dead letters"

            # Nothing of a wrong-tenant event was applied; each was counted as a tenant mismatch.
            refused = [r.event_id for r in hostile.values() if r.kind.startswith("wrong-")]
            assert not await applied(engine, schema, name, refused), name
            mismatches = mismatched[name].delta()
            assert mismatches >= len(refused) > 0, (name, mismatches, len(refused))

        # No row written for trust B, none changed; no row puts B's academy in trust A; P is A's.
        await _assert_no_cross_tenant_effect(engine, schema, t, trust_b_before, rosters)
        if service in REBUILDS:
            # A rebuild replays the topics, hostile records and all: it refuses what the consumer did.
            await REBUILDS[service](service_settings, engine)
            await _assert_no_cross_tenant_effect(engine, schema, t, trust_b_before, rosters)


async def _assert_no_cross_tenant_effect(engine: Any, schema: str, t: Tenancy, trust_b_before: Any,
                                         rosters: list[Any]) -> None:
    known = {(t.pupil_p, t.trust_a, t.academy_a), (t.pupil_q, t.trust_b, t.academy_b)}
    assert await rows_of_trust(engine, schema, t.trust_b) == trust_b_before
    assert await rows_of_academy_in_trust(engine, schema, t.trust_a, t.academy_b) == {}
    for roster in rosters:
        assert await roster_rows(engine, roster, [t.pupil_p, t.pupil_q]) == known, roster.fullname


async def _equal(rows: Any, expected: Any) -> bool:
    return await rows == expected


def _topics(contexts: list[str], prefix: str) -> set[str]:
    return {topic for context in contexts for topic in topics_of(context, prefix)}


def _header(record: Any, name: str) -> str:
    return next(value.decode() for key, value in record.headers if key == name)
