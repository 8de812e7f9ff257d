"""Log lines: one JSON object each, with allow-listed fields only and personal data scrubbed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared.logs import REDACTED, configure_logging, scrub

PUPIL_ID = "3f2b8c1e-9d4a-4e6b-8a71-0c5d2e9f4b13"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    output = io.StringIO()
    configure_logging("assessment", "DEBUG", stream=output)
    yield output
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_line(stream: io.StringIO) -> None:
    log = logging.getLogger("assessment.projector")
    log.info("projected %d events", 3)
    log.warning("lagging")
    first, second = lines(stream)
    assert first["msg"] == "projected 3 events"
    assert first["level"] == "INFO"
    assert first["logger"] == "assessment.projector"
    assert first["service"] == "assessment"
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "WARNING"


def test_level_is_respected(stream: io.StringIO) -> None:
    configure_logging("assessment", "warning", stream=stream)
    logging.getLogger("x").info("quiet")
    assert stream.getvalue() == ""


def test_only_allow_listed_extras_are_emitted(stream: io.StringIO) -> None:
    logging.getLogger("x").info(
        "observation recorded",
        extra={
            "pupil_id": PUPIL_ID,
            "event_type": "ObservationRecorded",
            "pupil_name": "Jane Doe",
            "note": "sad",
        },
    )
    [line] = lines(stream)
    assert line["pupil_id"] == PUPIL_ID
    assert line["event_type"] == "ObservationRecorded"
    assert "pupil_name" not in line and "note" not in line
    assert "Jane" not in stream.getvalue()


def test_email_upn_and_phone_are_redacted_from_messages(stream: io.StringIO) -> None:
    logging.getLogger("x").info(
        "contact %s about %s on %s", "parent.doe@example.co.uk", "A123456789012", "07700 900123"
    )
    [line] = lines(stream)
    assert line["msg"] == f"contact {REDACTED} about {REDACTED} on {REDACTED}"


def test_exceptions_are_logged_as_type_and_frames_with_a_scrubbed_message(
    stream: io.StringIO,
) -> None:
    def save_note() -> None:
        raise ValueError("duplicate note for jane@example.org")

    try:
        try:
            save_note()
        except ValueError as exc:
            raise RuntimeError("projection failed for B987654321098") from exc
    except RuntimeError:
        logging.getLogger("x").exception("unhandled error", extra={"error_type": "RuntimeError"})
    [line] = lines(stream)
    exception = line["exception"]
    assert exception["type"] == "builtins.RuntimeError"
    assert exception["message"] == f"projection failed for {REDACTED}"
    assert exception["cause"]["type"] == "builtins.ValueError"
    assert exception["cause"]["message"] == f"duplicate note for {REDACTED}"
    assert any("in save_note" in frame for frame in exception["cause"]["frames"])
    assert "jane" not in stream.getvalue() and "B987654321098" not in stream.getvalue()


def test_trace_and_span_ids_come_from_the_current_span(stream: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("handle") as span:
        logging.getLogger("x").info("inside")
    logging.getLogger("x").info("outside")
    inside, outside = lines(stream)
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside


@pytest.mark.parametrize(
    "text",
    [
        "someone@school.sch.uk",
        "A123456789012",
        "t123456789012",
        "K12345678901A",
        "07700 900123",
        "07700900123",
        "+44 7700 900123",
        "+44 (0)20 7946 0958",
        "020-7946-0958",
    ],
)
def test_scrub_catches_personal_identifiers(text: str) -> None:
    assert scrub(f"before {text} after") == f"before {REDACTED} after"


@pytest.mark.parametrize(
    "text",
    [
        PUPIL_ID,
        "00000000-0000-0000-0000-000000000000",
        "01234567-8901-2345-6789-012345678901",
        "2024-03-14T09:30:00.123+00:00",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "offset 1234567 partition 3 took 12.5 ms",
        "flourish.assessment.ObservationRecorded.v1",
    ],
)
def test_scrub_leaves_ids_and_measurements_alone(text: str) -> None:
    assert scrub(text) == text
