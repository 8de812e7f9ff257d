"""Every event type on the wire: CloudEvents 1.0 binary mode over Kafka, tenancy on every event,
and precise errors for what is not a valid event."""

from __future__ import annotations

import types
import typing
import uuid
from datetime import UTC, date, datetime
from enum import Enum

import pytest

import shared.events  # noqa: F401  (registers every event type)
from shared.events.envelope import Envelope, InvalidMessage, decode, encode
from shared.events.registry import Event, registered_types

TRUST, ACADEMY = uuid.uuid4(), uuid.uuid4()


def example(model: type[Event]) -> Event:
    """An instance of any event model, with a plausible value for every field."""
    values: dict[str, typing.Any] = {}
    for name, field in model.model_fields.items():
        values[name] = _value_for(field.annotation)
    return model(**values)


def _value_for(annotation: typing.Any) -> typing.Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _value_for(next(a for a in typing.get_args(annotation) if a is not type(None)))
    if origin is list:
        return [_value_for(typing.get_args(annotation)[0])]
    if origin is dict:
        key, value = typing.get_args(annotation)
        return {_value_for(key): _value_for(value)}
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return next(iter(annotation))
    return {
        uuid.UUID: uuid.uuid4(), str: "being.safe.1", int: 3, float: 36.0, bool: True,
        datetime: datetime(2026, 11, 26, 9, 30, tzinfo=UTC), date: date(2026, 11, 26),
    }[annotation]


ALL_TYPES = sorted(registered_types().items())


@pytest.mark.parametrize(("event_type", "model"), ALL_TYPES, ids=[t for t, _ in ALL_TYPES])
def test_every_event_type_round_trips_through_kafka_binary_mode(event_type, model):
    envelope = Envelope(data=example(model), trust_id=TRUST, academy_id=ACADEMY, source="/flourish/tests",
                        causation_id=uuid.uuid4(), traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    key, headers, value = encode(envelope, stream_id="stream-1")
    names = dict(headers)

    assert decode(headers, value) == envelope
    assert names["ce_specversion"] == b"1.0" and names["ce_type"] == event_type.encode()
    assert names["ce_trustid"] == str(TRUST).encode() and names["ce_academyid"] == str(ACADEMY).encode()
    assert names["content-type"] == b"application/json"
    pupil = getattr(envelope.data, "pupil_id", None)
    assert key == (str(pupil).encode() if pupil else b"stream-1")


@pytest.mark.parametrize("event_type", [t for t, _ in ALL_TYPES])
def test_every_event_type_names_its_context_and_version(event_type):
    model = registered_types()[event_type]
    prefix, context, name, version = event_type.split(".")
    assert (prefix, context, name) == ("flourish", model.context, model.__name__)
    assert version.startswith("v") and version[1:].isdigit()


@pytest.mark.parametrize("missing", ["ce_trustid", "ce_academyid", "ce_id", "ce_type", "ce_source", "ce_time"])
def test_a_message_without_a_required_attribute_is_refused_by_name(missing):
    model = registered_types()["flourish.assessment.ObservationRecorded.v1"]
    _, headers, value = encode(Envelope(data=example(model), trust_id=TRUST, academy_id=ACADEMY, source="/x"))
    with pytest.raises(InvalidMessage, match=f"missing header {missing}"):
        decode([(n, v) for n, v in headers if n != missing], value)


def test_a_wrong_spec_version_an_unknown_type_and_bad_data_are_told_apart():
    model = registered_types()["flourish.assessment.ObservationRecorded.v1"]
    _, headers, value = encode(Envelope(data=example(model), trust_id=TRUST, academy_id=ACADEMY, source="/x"))

    def with_header(name: str, raw: bytes) -> list[tuple[str, bytes]]:
        return [(n, raw if n == name else v) for n, v in headers]

    with pytest.raises(InvalidMessage, match=r"ce_specversion is '0\.3', expected '1\.0'"):
        decode(with_header("ce_specversion", b"0.3"), value)
    with pytest.raises(InvalidMessage, match=r"unknown event type 'flourish\.x\.Y\.v9'"):
        decode(with_header("ce_type", b"flourish.x.Y.v9"), value)
    with pytest.raises(InvalidMessage, match="header ce_trustid is not a UUID"):
        decode(with_header("ce_trustid", b"trust-1"), value)
    with pytest.raises(InvalidMessage, match=r"level: Input should be 'rarely'"):
        decode(headers, value.replace(b'"rarely"', b'"sometimes"'))
    with pytest.raises(InvalidMessage, match="content-type 'application/xml'"):
        decode(with_header("content-type", b"application/xml"), value)


def test_an_invalid_field_is_named_without_echoing_its_value():
    model = registered_types()["flourish.assessment.ObservationRecorded.v1"]
    _, headers, value = encode(Envelope(data=example(model), trust_id=TRUST, academy_id=ACADEMY, source="/x"))
    secret = b"Jane Doe, born 01/02/2017"
    with pytest.raises(InvalidMessage) as caught:
        decode(headers, value.replace(b'"being.safe.1"', b"123").replace(b'"level":"rarely"', b'"level":"' + secret + b'"'))
    assert "level" in caught.value.reason and "Jane" not in caught.value.reason
