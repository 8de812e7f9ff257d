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

    trace_id = request.get_span_context().trace_id
    in_trace = {span.name: span for span in spans.get_finished_spans() if span.context.trace_id == trace_id}
    publish, process = in_trace[f"{topic} publish"], in_trace["tests.tracing process"]
    assert publish.kind is SpanKind.PRODUCER and publish.parent.span_id == request.get_span_context().span_id
    assert process.kind is SpanKind.CONSUMER and process.parent.span_id == publish.context.span_id
    assert process.attributes["cloudevents.event_id"] == str(event.id)
