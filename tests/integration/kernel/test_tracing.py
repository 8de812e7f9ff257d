"""One trace follows an event from the command that wrote it, through the relay and Kafka, into
the consumer that applied it."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared.events.assessment import ObservationRecorded
from shared.events.envelope import encode, topic_for
from shared.messaging.clients import ADMIN, kafka_options
from shared.messaging.consumer import IdempotentConsumer
from shared.store.event_store import EventStore
from shared.store.outbox import OutboxRelay
from shared.telemetry import current_trace_headers
from tests.integration.kernel.helpers import (
    SEALING,
    consumer_for,
    create_effects_table,
    effects,
    eventually,
    observation,
    running,
)


async def test_a_trace_continues_across_a_kafka_hop(engine, kernel, publisher, stack_settings, topic_prefix, spans):
    bootstrap = kafka_options(stack_settings, ADMIN)
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    store = EventStore(kernel, sealing=SEALING)

    with trace.get_tracer("tests").start_as_current_span("POST /observations", kind=SpanKind.SERVER) as request:
        event = observation().with_trace(*current_trace_headers())
        async with engine.begin() as conn:
            await store.append(conn, "s", [event])
    await OutboxRelay(engine, kernel, publisher, topic_prefix=topic_prefix).drain()

    consumer = consumer_for("tests.tracing", engine, kernel, publisher, topic_prefix)
    async with running(bootstrap, consumer, topic):
        await eventually(lambda: effects(engine, kernel))

    request_context = request.get_span_context()
    finished = spans.get_finished_spans()
    process = next(span for span in finished if span.name == "tests.tracing process")
    publish = next(span for span in finished if span.name == f"{kernel.schema} outbox publish")
    # The consumer continues the trace of the request that wrote the event...
    assert process.kind is SpanKind.CONSUMER and process.context.trace_id == request_context.trace_id
    assert process.parent.span_id == request_context.span_id
    assert process.attributes["cloudevents.event_id"] == str(event.id)
    # ...and the relay's batch span links to it, so the hop through the outbox is visible too.
    assert publish.kind is SpanKind.PRODUCER
    assert [link.context.span_id for link in publish.links] == [request_context.span_id]


def _records(topic: str, envelopes: list) -> list[ConsumerRecord]:
    """The records Kafka would hand a consumer for these events, in one poll."""
    records = []
    for offset, envelope in enumerate(envelopes):
        key, headers, value = encode(envelope)
        records.append(ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), headers))
    return records


async def test_a_batch_consumer_continues_the_one_trace_of_its_events_and_links_a_mixed_batch(
    engine, kernel, publisher, topic_prefix, spans,
):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /observations/bulk", kind=SpanKind.SERVER) as bulk:
        from_bulk = [observation().with_trace(*current_trace_headers()) for _ in range(3)]
    with tracer.start_as_current_span("POST /observations", kind=SpanKind.SERVER) as single:
        from_single = observation().with_trace(*current_trace_headers())
    applied: list = []

    async def apply(conn, run) -> None:
        applied.extend(run)

    consumer = IdempotentConsumer("tests.batch-tracing", engine, kernel, {}, publisher, topic_prefix=topic_prefix,
                                  batch_handlers={ObservationRecorded: apply}, sealing=SEALING)
    topic = topic_for("assessment", topic_prefix)
    await consumer.process(_records(topic, from_bulk[:2]))
    await consumer.process(_records(topic, [from_bulk[2], from_single]))

    assert len(applied) == 4
    one_trace, mixed = [span for span in spans.get_finished_spans() if span.name == "tests.batch-tracing process"]
    # Events of one request: the batch span is a child of that request, in its trace.
    assert one_trace.context.trace_id == bulk.get_span_context().trace_id
    assert one_trace.parent.span_id == bulk.get_span_context().span_id
    # Events of two requests: a trace of its own, linked to both.
    assert mixed.context.trace_id not in {bulk.get_span_context().trace_id, single.get_span_context().trace_id}
    assert mixed.parent is None
    assert {link.context.span_id for link in mixed.links} == {bulk.get_span_context().span_id,
                                                              single.get_span_context().span_id}
