"""The one emission path: source from the schema, trace context always, one correlation per command."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import MetaData

from shared.events.assessment import PupilEnrolled, PupilLeft
from shared.events.audit import AuditQueried
from shared.events.envelope import Envelope
from shared.store.emission import Emission, source_of, trace_id_of
from shared.store.event_store import EventStore
from shared.store.tables import kernel_tables
from shared.telemetry import context_from

TRUST, ACADEMY = uuid.uuid4(), uuid.uuid4()
# A provider of our own: spans with real ids, without touching the process's global provider.
tracer = TracerProvider().get_tracer("tests")


def store(schema: str = "assessment") -> EventStore:
    return EventStore(kernel_tables(MetaData(schema=schema)))


def enrolled() -> PupilEnrolled:
    return PupilEnrolled(pupil_id=uuid.uuid4(), enrolled_on=date(2026, 9, 3))


def test_an_event_s_source_is_its_context_and_an_audit_fact_s_the_service_that_recorded_it():
    fact = AuditQueried(actor="dpo-1", query="entries", filters={}, result_count=0, queried_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert source_of(enrolled(), "assessment") == "/flourish/assessment"
    assert source_of(fact, "consent") == "/flourish/consent"


def test_every_envelope_carries_the_current_span_s_trace_and_the_command_s_one_correlation():
    with tracer.start_as_current_span("POST /rosters") as span:
        emission = Emission(store(), TRUST)
        first = emission.add("pupil-1", ACADEMY, enrolled())
        second = emission.add("pupil-2", ACADEMY, enrolled())
    trace_id = format(span.get_span_context().trace_id, "032x")
    for envelope in (first, second):
        assert envelope.traceparent is not None and trace_id_of(envelope.traceparent) == trace_id
        assert envelope.source == "/flourish/assessment" and envelope.trust_id == TRUST
        assert envelope.causation_id is None
    assert first.correlation_id == first.id and second.correlation_id == first.id
    assert dict(emission.by_stream) == {"pupil-1": [first], "pupil-2": [second]}


def test_an_event_caused_by_another_joins_its_correlation_and_its_trace_when_no_span_of_that_trace_runs():
    with tracer.start_as_current_span("POST /shares"):
        cause = Emission(store("reporting"), TRUST).add("s", ACADEMY, enrolled())
    assert trace.get_current_span().get_span_context().is_valid is False
    with tracer.start_as_current_span("delivery pass"):  # a worker's own trace
        caused = Emission(store(), TRUST, cause=cause).add("s", ACADEMY, PupilLeft(pupil_id=uuid.uuid4(),
                                                                                   left_on=date(2026, 9, 4)))
    assert caused.correlation_id == cause.correlation_id and caused.causation_id == cause.id
    assert caused.traceparent == cause.traceparent


def test_a_consumer_s_span_in_the_cause_s_trace_is_the_parent_of_what_it_emits():
    with tracer.start_as_current_span("POST /consents"):
        cause = Emission(store("consent"), TRUST).add("s", ACADEMY, enrolled())
    assert cause.traceparent is not None
    # What a consumer does: its span continues the trace the event was written in.
    with tracer.start_as_current_span("consume", context=context_from(cause.traceparent, cause.tracestate)) as consuming:
        caused: Envelope[PupilEnrolled] = Emission(store(), TRUST, cause=cause).add("s", ACADEMY, enrolled())
    assert caused.traceparent is not None and trace_id_of(caused.traceparent) == trace_id_of(cause.traceparent)
    assert caused.traceparent.split("-")[2] == format(consuming.get_span_context().span_id, "016x")
