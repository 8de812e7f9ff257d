"""The audit ledger's consumer: every disclosure, consent change, erasure and audit fact on
Kafka becomes one entry, once (the kernel's inbox), chained in the trust's order.

An event that cannot be recorded is never dropped: the handler raises, the kernel's consumer
retries it with backoff and then dead-letters it (flourish.dlq.reporting.audit-ledger), and
flourish_audit_record_failures, flourish_consumer_retries and flourish_dead_lettered show it.

Audit facts come from each producer's own topic (<prefix>audit.<service>, shared.messaging.topics):
the kernel's consumer refuses one that claims another recorder than the topic's, and hands the
ledger every event with its source set from the topic, so an entry's `source` is the producer
the broker let write it, never the event's own word.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.audit.domain.facts import fact_from, is_recorded
from services.reporting.audit.ledger import Ledger
from services.reporting.audit.metrics import record_failures
from shared.events.envelope import Envelope
from shared.events.registry import Event, registered_types
from shared.messaging.consumer import Handler
from shared.service import ConsumerSpec
from shared.store.db import is_transient

NAME = "audit-ledger"
CONTEXTS = ("reporting", "consent", "audit")


def recorder(ledger: Ledger) -> Callable[[AsyncConnection, Envelope], Awaitable[None]]:
    async def record_in_ledger(conn: AsyncConnection, envelope: Envelope) -> None:
        try:
            await ledger.append(conn, envelope.trust_id, fact_from(envelope))
        except Exception as error:
            if not is_transient(error):
                record_failures.add(1, {"event_type": envelope.type, "error_type": type(error).__name__})
            raise

    return record_in_ledger


def recorded_types() -> list[type[Event]]:
    """The event types the ledger records, among those registered when the service starts."""
    return [model for _, model in sorted(registered_types().items()) if is_recorded(model)]


def ledger_consumer(roster: Table) -> ConsumerSpec:
    """The consumer group that records into the reporting service's ledger (its dependencies hold
    it as `.audit.ledger`); `roster` is where it knows each pupil's trust from."""

    def handlers(reporting: Any) -> dict[type[Event], Handler]:
        record = recorder(reporting.audit.ledger)
        return dict.fromkeys(recorded_types(), record)

    return ConsumerSpec(name=NAME, contexts=CONTEXTS, handlers_from=handlers, roster=roster)
