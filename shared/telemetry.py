"""OpenTelemetry for every service: traces that follow an event across Kafka, and the metrics
the ops dashboards read. Nothing here ever records personal data: spans and metrics carry event
types, topics, pseudonymous ids and counts only."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter

_propagator = TraceContextTextMapPropagator()
tracer = trace.get_tracer("flourish")
meter = metrics.get_meter("flourish")

# Instruments are created against the API's proxy provider, so they work whichever provider the
# process installs later (the service's Prometheus reader, or none in unit tests).
events_appended = meter.create_counter(
    "flourish_events_appended", unit="{event}", description="Events appended to an event store"
)
outbox_published = meter.create_counter(
    "flourish_outbox_published", unit="{event}", description="Outbox events published to Kafka"
)
outbox_publish_failures = meter.create_counter(
    "flourish_outbox_publish_failures", description="Relay batches that Kafka did not acknowledge"
)
background_task_failures = meter.create_counter(
    "flourish_background_task_failures",
    description="A service's background tasks (relay, consumers' workers, schedulers) that ended while it ran, by task",
)
# Outbox rows waiting per schema, as the relay leader last counted them.
_backlog: dict[str, int] = {}


def record_outbox_backlog(schema: str, rows: int) -> None:
    _backlog[schema] = rows


def _observe_backlog(_: Any) -> Iterator[metrics.Observation]:
    for schema, rows in list(_backlog.items()):
        yield metrics.Observation(rows, {"schema": schema})


outbox_backlog = meter.create_observable_gauge(
    "flourish_outbox_backlog", callbacks=[_observe_backlog], unit="{event}",
    description="Events committed but not yet published, counted by the relay leader",
)
messages_consumed = meter.create_counter(
    "flourish_messages_consumed",
    unit="{message}",
    description="Messages a consumer finished, by outcome (applied, duplicate, ignored, dead_lettered)",
)
consumer_retries = meter.create_counter(
    "flourish_consumer_retries", description="Attempts a consumer made again after a failure"
)
dead_lettered = meter.create_counter(
    "flourish_dead_lettered", unit="{message}", description="Messages sent to a dead-letter topic"
)
# What was refused for not coming from whom it must (kind: event_from_wrong_producer, ...): the
# ops page shows each kind, and any one is worth an alert (an insider, or a client gone wrong).
security_refusals = Counter(
    "flourish_security_refusals_total", "Requests and events refused as not coming from whom they must", ["kind"]
)


# Lag per consumer group and partition, as seen after each batch: the records in the partition
# beyond the last one the group has applied. Kept here and read by an observable gauge.
_lag: dict[tuple[str, str, int], int] = {}


def record_consumer_lag(consumer: str, topic: str, partition: int, lag: int) -> None:
    _lag[(consumer, topic, partition)] = max(lag, 0)


def _observe_lag(_: Any) -> Iterator[metrics.Observation]:
    for (consumer, topic, partition), lag in list(_lag.items()):
        yield metrics.Observation(lag, {"consumer": consumer, "topic": topic, "partition": str(partition)})


consumer_lag = meter.create_observable_gauge(
    "flourish_consumer_lag", callbacks=[_observe_lag], unit="{message}",
    description="Records in a partition beyond the last one the consumer group applied",
)

http_request_duration = meter.create_histogram(
    "flourish_http_request_duration", unit="s", description="API requests by route, method and status"
)


def current_trace_headers() -> tuple[str | None, str | None]:
    """The W3C traceparent/tracestate of the active span, to store beside an event."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def context_from(traceparent: str | None, tracestate: str | None) -> Context | None:
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _propagator.extract(carrier)


def span_context(traceparent: str | None, tracestate: str | None) -> trace.SpanContext:
    """The span context a stored traceparent names (invalid if none), for span links."""
    return trace.get_current_span(context_from(traceparent, tracestate)).get_span_context()


@contextmanager
def messaging_span(
    name: str, kind: SpanKind, traceparent: str | None, tracestate: str | None, **attributes: str | int
) -> Iterator[Span]:
    """A producer or consumer span that continues the trace the event was written in."""
    with tracer.start_as_current_span(
        name, context=context_from(traceparent, tracestate), kind=kind, attributes=attributes
    ) as span:
        yield span


def configure_tracing(service: str, otlp_endpoint: str | None, trace_file: Path | None = None) -> None:
    """Install the SDK tracer provider once per process (a second call keeps the first). Spans go
    to an OTLP collector, and/or as JSON lines to a file (local runs and the end-to-end tests,
    which read every service's spans back to follow one trace and to scan them for personal data)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"flourish-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if trace_file is not None:
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(trace_file), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one line of OTel's JSON form; several processes may share a
    file (each line is written with one O_APPEND write)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        os.write(self._fd, lines.encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        os.close(self._fd)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def configure_metrics(service: str) -> None:
    """Expose every instrument on Prometheus' registry, which /metrics serves."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        return
    provider = MeterProvider(
        resource=Resource.create({"service.name": f"flourish-{service}"}),
        metric_readers=[PrometheusMetricReader()],
    )
    metrics.set_meter_provider(provider)


class TracingMiddleware:
    """A server span and a duration metric for every HTTP request (pure ASGI, so streaming and
    lifespan pass through untouched). The span continues a caller's W3C trace context, and is
    the parent of everything the request does, the events it appends included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        parent = context_from(headers.get("traceparent"), headers.get("tracestate"))
        method = scope["method"]
        status = {"code": 500}

        async def send_with_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        with tracer.start_as_current_span(f"{method}", context=parent, kind=SpanKind.SERVER) as span:
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                # The route template, never the path: paths hold pupil ids.
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status["code"])
                http_request_duration.record(
                    time.perf_counter() - started,
                    {"method": method, "route": route, "status": str(status["code"])},
                )
