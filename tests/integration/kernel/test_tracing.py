"""One trace follows an event from the command that wrote it, through the relay and Kafka, into
the consumer that applied it."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared.events.envelope import topic_for
from shared.store.event_store import EventStore
from shared.store.outbox import OutboxRelay
from shared.telemetry import current_trace_headers
from tests.integration.kernel.helpers import consumer_for, create_effects_table, effects, eventually, observation, running


async def test_a_trace_continues_across_a_kafka_hop(engine, kernel, publisher, stack_settings, topic_prefix, spans):
    bootstrap = stack_settings.kafka_bootstrap_servers
    topic = topic_for("assessment", topic_prefix)
    await create_effects_table(engine, kernel)
    store = EventStore(kernel)

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
