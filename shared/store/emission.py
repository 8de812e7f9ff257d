"""The one route from decided to appended: every envelope the platform appends is built here.

A handler decides (its domain returns events), then emits them through an `Emission`:

    emission = Emission(ctx.store, trust_id, cause=envelope)   # cause: the event being handled, if any
    emission.add(stream, academy_id, event)                     # as many streams and events as decided
    await emission.append(conn, expected={stream: version})     # one statement, caller's transaction

So every envelope gets, in one place and the same way:
- its source: the bounded context its schema is registered under (`/flourish/<context>`); audit
  facts, which every service records into the one shared `audit` context, name the service whose
  store recorded them (the outbox sends them to that service's own topic, audit.<service>, and
  consumers refuse one whose source is not its topic's producer: shared.messaging.provenance);
- its tenancy: the trust of the command, the academy of each event;
- its correlation and causation: an event caused by another (a consumed event, the share a
  delivery belongs to) carries the cause's correlation and is caused by it; a command's events
  share one correlation, started by its first event;
- its trace context, always: the W3C traceparent/tracestate of the current span, or of the cause
  when the current span is not in the cause's trace (a background worker acting on what a request
  decided), so the trace that decided an event is the trace every consumer of it continues.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events.envelope import Envelope
from shared.events.registry import Event
from shared.store.event_store import ANY_VERSION, EventStore, PendingAppend
from shared.telemetry import current_trace_headers

E = TypeVar("E", bound=Event)

# The one context every service publishes into: its facts' source is the service that recorded them.
SHARED_CONTEXTS = frozenset({"audit"})


def source_of(event: Event, recorder: str) -> str:
    """The CloudEvents source of an event a service (`recorder`, its store's schema) emits."""
    context = recorder if event.context in SHARED_CONTEXTS else event.context
    return f"/flourish/{context}"


def trace_context(cause: Envelope[Event] | None = None) -> tuple[str | None, str | None]:
    """The trace an emitted event belongs to: the current span's, unless a cause was written in
    another trace than the one running now (or none runs), in which case the cause's."""
    traceparent, tracestate = current_trace_headers()
    if cause is None or not cause.traceparent:
        return traceparent, tracestate
    if traceparent and trace_id_of(traceparent) == trace_id_of(cause.traceparent):
        return traceparent, tracestate
    return cause.traceparent, cause.tracestate


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`)."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


class Emission:
    """The envelopes of one decision, by stream and in the order they were decided."""

    def __init__(self, store: EventStore, trust_id: UUID, *, cause: Envelope[Event] | None = None) -> None:
        self.store = store
        self.trust_id = trust_id
        self.cause = cause
        self.correlation_id: UUID | None = cause.correlation_id if cause else None
        self.traceparent, self.tracestate = trace_context(cause)
        self.by_stream: dict[str, list[Envelope[Event]]] = defaultdict(list)
        self.in_order: list[Envelope[Event]] = []

    def add(self, stream: str, academy_id: UUID, event: E) -> Envelope[E]:
        envelope = Envelope(
            data=event,
            trust_id=self.trust_id,
            academy_id=academy_id,
            source=source_of(event, self.store.tables.schema),
            correlation_id=self.correlation_id,
            causation_id=self.cause.id if self.cause else None,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
        )
        # A command's first event starts its correlation; the rest of the command share it.
        self.correlation_id = envelope.correlation_id
        self.by_stream[stream].append(envelope)
        self.in_order.append(envelope)
        return envelope

    def add_all(self, stream: str, academy_id: UUID, events: Sequence[E]) -> list[Envelope[E]]:
        return [self.add(stream, academy_id, event) for event in events]

    async def append(self, conn: AsyncConnection, expected: Mapping[str, int] | None = None, *,
                     locked: Collection[str] = ()) -> dict[str, int]:
        """Append every stream's events in one statement, in the caller's transaction; `expected`
        holds the version a stream must be at (streams not named take any version). Returns the
        streams' new versions. `locked`: streams an earlier statement locked (EventStore.append_batch)."""
        expected = expected or {}
        return await self.store.append_batch(conn, [
            PendingAppend(stream, envelopes, expected.get(stream, ANY_VERSION))
            for stream, envelopes in self.by_stream.items()
        ], locked=locked)


async def emit(
    conn: AsyncConnection,
    store: EventStore,
    stream: str,
    events: Sequence[E],
    *,
    trust_id: UUID,
    academy_id: UUID,
    expected_version: int | None = ANY_VERSION,
    cause: Envelope[Event] | None = None,
) -> list[Envelope[E]]:
    """Emit a decision's events to one stream: the common case of `Emission`."""
    emission = Emission(store, trust_id, cause=cause)
    envelopes = emission.add_all(stream, academy_id, events)
    await emission.append(conn, {stream: expected_version} if expected_version is not None else None)
    return envelopes
