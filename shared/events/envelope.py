"""CloudEvents 1.0 over the Kafka protocol binding (binary mode): an event and its context on the wire.

The value of a Kafka record is the event's JSON data; every attribute travels as a ``ce_``
header; the key is the pseudonymous pupil id, so one pupil's events stay in one partition and in
order. Tenancy, correlation and causation are CloudEvents extensions; trace context travels in the
W3C ``traceparent``/``tracestate`` headers that OpenTelemetry propagators read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

import orjson
from pydantic import ValidationError

from shared.events.registry import Event, UnknownEventType, model_for

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
TOPIC_PREFIX = "flourish."

Headers = list[tuple[str, bytes]]

# The event an envelope carries: `Envelope[ObservationRecorded]` says which one a handler takes.
EventT_co = TypeVar("EventT_co", bound=Event, covariant=True)


def topic_for(context: str, prefix: str = TOPIC_PREFIX) -> str:
    """One topic per bounded context (tests give each run a prefix of its own)."""
    return f"{prefix}{context}"


class InvalidMessage(ValueError):
    """A Kafka record that is not a valid Flourish CloudEvent. The reason names what is wrong
    (a header, the type, a field) but never echoes field values, which may be personal data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Envelope(Generic[EventT_co]):
    """An event with the context every consumer needs: who it is about, for which tenant, why.

    Envelopes are built in one place, `shared.store.emission` (what a service appends), and read
    back by `decode` (from Kafka) and the event store (from its rows); nothing else builds one.
    """

    data: EventT_co
    trust_id: UUID
    academy_id: UUID
    source: str
    id: UUID = field(default_factory=uuid4)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    correlation_id: UUID | None = None
    causation_id: UUID | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    def __post_init__(self) -> None:
        if self.correlation_id is None:
            # A command's first event starts its own correlation.
            object.__setattr__(self, "correlation_id", self.id)

    @property
    def type(self) -> str:
        return self.data.event_type

    @property
    def subject(self) -> str | None:
        return self.data.partition_key()

    def with_trace(self, traceparent: str | None, tracestate: str | None) -> Envelope[EventT_co]:
        return replace(self, traceparent=traceparent, tracestate=tracestate)


def encode(envelope: Envelope[Event], stream_id: str | None = None) -> tuple[bytes, Headers, bytes]:
    """Kafka key, headers and value for an envelope (binary content mode)."""
    attributes = WireAttributes(
        id=str(envelope.id),
        type=envelope.type,
        source=envelope.source,
        time=envelope.time.isoformat(),
        trust_id=str(envelope.trust_id),
        academy_id=str(envelope.academy_id),
        correlation_id=str(envelope.correlation_id),
        causation_id=str(envelope.causation_id) if envelope.causation_id else None,
        subject=envelope.subject,
        partition_key=envelope.subject or stream_id or str(envelope.id),
        traceparent=envelope.traceparent,
        tracestate=envelope.tracestate,
    )
    return attributes.partition_key.encode(), attributes.headers(), envelope.data.model_dump_json().encode()


@dataclass(frozen=True)
class WireAttributes:
    """An event's CloudEvents attributes as strings: what the outbox relay reads from a stored
    event and writes as headers, without rebuilding the event model."""

    id: str
    type: str
    source: str
    time: str
    trust_id: str
    academy_id: str
    correlation_id: str
    partition_key: str
    causation_id: str | None = None
    subject: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    def headers(self) -> Headers:
        headers: Headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", self.time.encode()),
            ("content-type", CONTENT_TYPE.encode()),
            ("ce_trustid", self.trust_id.encode()),
            ("ce_academyid", self.academy_id.encode()),
            ("ce_correlationid", self.correlation_id.encode()),
            ("ce_partitionkey", self.partition_key.encode()),
        ]
        optional = (
            ("ce_subject", self.subject),
            ("ce_causationid", self.causation_id),
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
        )
        headers.extend((name, value.encode()) for name, value in optional if value)
        return headers


@dataclass(frozen=True)
class WireEvent:
    """A record's CloudEvents attributes and its JSON data, before the data becomes a model: the
    data may be sealed (shared.events.sealing), and only a keyring opens it."""

    model: type[Event]
    data: dict[str, Any]
    id: UUID
    source: str
    time: datetime
    trust_id: UUID
    academy_id: UUID
    correlation_id: UUID
    causation_id: UUID | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    @property
    def type(self) -> str:
        return self.model.event_type

    def envelope(self, data: Event) -> Envelope[Event]:
        return Envelope(data=data, id=self.id, source=self.source, time=self.time, trust_id=self.trust_id,
                        academy_id=self.academy_id, correlation_id=self.correlation_id,
                        causation_id=self.causation_id, traceparent=self.traceparent, tracestate=self.tracestate)


def _checked_head(headers: Headers | None, value: bytes | None) -> tuple[dict[str, str], type[Event], str, bytes]:
    """A record's CloudEvents attributes, the model its type names and its value; InvalidMessage if
    any is wrong."""
    attributes = _header_map(headers)
    spec = _required(attributes, "ce_specversion")
    if spec != SPEC_VERSION:
        raise InvalidMessage(f"ce_specversion is {spec!r}, expected {SPEC_VERSION!r}")
    content_type = attributes.get("content-type", CONTENT_TYPE)
    if not content_type.startswith(CONTENT_TYPE):
        raise InvalidMessage(f"content-type {content_type!r} is not {CONTENT_TYPE}")
    event_type = _required(attributes, "ce_type")
    try:
        model = model_for(event_type)
    except UnknownEventType as error:
        raise InvalidMessage(str(error)) from None
    if value is None:
        raise InvalidMessage(f"{event_type}: the record has no value (a tombstone?)")
    return attributes, model, event_type, value


def decode_wire(headers: Headers | None, value: bytes | None) -> WireEvent:
    """Parse a Kafka record's headers and JSON value (not yet the model), or raise InvalidMessage."""
    attributes, model, event_type, value = _checked_head(headers, value)
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        # The parser's message and position only ("depth limit exceeded"): never the input.
        raise InvalidMessage(f"{event_type}: the value is not JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise InvalidMessage(f"{event_type}: the value is not a JSON object")
    event_id = _uuid(attributes, "ce_id")
    return WireEvent(
        model=model,
        data=data,
        id=event_id,
        source=_required(attributes, "ce_source"),
        time=_time(attributes),
        trust_id=_tenant_uuid(attributes, "ce_trustid"),
        academy_id=_tenant_uuid(attributes, "ce_academyid"),
        # A command's first event is its own correlation: the same text, parsed once.
        correlation_id=event_id if attributes.get("ce_correlationid") == attributes["ce_id"]
        else _uuid(attributes, "ce_correlationid"),
        causation_id=_uuid(attributes, "ce_causationid") if "ce_causationid" in attributes else None,
        traceparent=attributes.get("traceparent"),
        tracestate=attributes.get("tracestate"),
    )


def invalid_data(event_type: str, error: ValidationError) -> InvalidMessage:
    """The InvalidMessage for data that is not a valid event (field names, never values)."""
    return InvalidMessage(f"{event_type}: {_describe(error)}")


def decode(headers: Headers | None, value: bytes | None) -> Envelope[Event]:
    """Parse a Kafka record with a plain (unsealed) value into an envelope, or raise InvalidMessage
    saying exactly why not. A sealed value needs a keyring: decode_wire, then EventSealing.open."""
    attributes, model, event_type, value = _checked_head(headers, value)
    try:
        data = model.model_validate_json(value)
    except ValidationError as error:
        raise InvalidMessage(f"{event_type}: {_describe(error)}") from None
    return Envelope(
        data=data,
        id=_uuid(attributes, "ce_id"),
        source=_required(attributes, "ce_source"),
        time=_time(attributes),
        trust_id=_uuid(attributes, "ce_trustid"),
        academy_id=_uuid(attributes, "ce_academyid"),
        correlation_id=_uuid(attributes, "ce_correlationid"),
        causation_id=_uuid(attributes, "ce_causationid") if "ce_causationid" in attributes else None,
        traceparent=attributes.get("traceparent"),
        tracestate=attributes.get("tracestate"),
    )


def _header_map(headers: Headers | None) -> dict[str, str]:
    try:
        return {name.lower(): raw.decode() if raw is not None else "" for name, raw in headers or ()}
    except UnicodeDecodeError:
        pass
    for name, raw in headers or ():
        try:
            raw.decode() if raw is not None else ""
        except UnicodeDecodeError:
            raise InvalidMessage(f"header {name!r} is not UTF-8") from None
    raise AssertionError("unreachable")  # pragma: no cover


# A topic's events name a few trusts and academies: each header value is parsed once (bounded).
_TENANTS: dict[str, UUID] = {}
_TENANTS_MAX = 10_000


def _tenant_uuid(attributes: dict[str, str], name: str) -> UUID:
    value = attributes.get(name)
    found = _TENANTS.get(value) if value else None
    if found is None:
        found = _uuid(attributes, name)
        if len(_TENANTS) >= _TENANTS_MAX:
            _TENANTS.clear()
        _TENANTS[value] = found  # type: ignore[index]
    return found


def _required(attributes: dict[str, str], name: str) -> str:
    value = attributes.get(name)
    if not value:
        raise InvalidMessage(f"missing header {name}")
    return value


def _uuid(attributes: dict[str, str], name: str) -> UUID:
    value = _required(attributes, name)
    try:
        return UUID(value)
    except ValueError:
        raise InvalidMessage(f"header {name} is not a UUID") from None


def _time(attributes: dict[str, str]) -> datetime:
    value = _required(attributes, "ce_time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessage("header ce_time is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise InvalidMessage("header ce_time has no time zone")
    return moment


def _describe(error: ValidationError) -> str:
    # Field locations and messages only: pydantic's default text quotes the input values.
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or '(data)'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    ]
    return "; ".join(problems)
