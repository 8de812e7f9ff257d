"""JSON log lines for every service, built to keep pupils' and staff's personal data out of them."""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from opentelemetry import trace

# The only `extra=` keys that reach a log line. Everything here is an identifier, a measurement or
# a classification: pupils and staff appear only as pseudonymous UUIDs, never by name, UPN, date of
# birth or contact details. Adding a key is a privacy decision: add it here, in review, not ad hoc.
ALLOWED_EXTRA_KEYS: frozenset[str] = frozenset(
    {
        # Event store and messaging.
        "event_id",
        "event_type",
        "stream_id",
        "stream_version",
        "expected_version",
        "topic",
        "partition",
        "offset",
        "consumer_group",
        "attempt",
        "command",
        "correlation_id",
        "causation_id",
        # Tenancy: pseudonymous UUIDs.
        "trust_id",
        "academy_id",
        "pupil_id",
        "group_id",
        # Measurements and outcomes.
        "count",
        "duration_ms",
        "status",
        "error_type",
        "method",
        "route",
        "service_name",
    }
)

REDACTED = "[redacted]"

# A safety net, not the rule: the rule is that code never puts personal data in a log message.
# These catch the identifiers most likely to slip through by accident. Names cannot be caught
# by a pattern, which is why messages must stay free of them in the first place.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# DfE Unique Pupil Number: 13 characters, a check letter, 11 digits, then a digit (or a letter
# for a temporary UPN).
_UPN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]\d{11}[A-Za-z0-9](?![A-Za-z0-9])")
# UK phone numbers: 0 or +44 (optionally "(0)") then 9 or 10 more digits, spaces or hyphens allowed.
# The look-arounds keep it from firing inside UUIDs, hashes and longer numbers.
_UK_PHONE = re.compile(r"(?<![\w+])(?:\+44\s?(?:\(0\)\s?)?|0)(?:\d[\s-]?){8,9}\d(?!\w)")
_PERSONAL_DATA_PATTERNS: tuple[re.Pattern[str], ...] = (_EMAIL, _UPN, _UK_PHONE)

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_RECORD_ATTRIBUTES: frozenset[str] = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}

# Causes and contexts beyond this depth add noise, not insight.
_MAX_EXCEPTION_CHAIN = 5


def scrub(text: str) -> str:
    """Replace e-mail addresses, UPNs and UK phone numbers in free text with "[redacted]"."""
    for pattern in _PERSONAL_DATA_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class JsonLogFormatter(logging.Formatter):
    """Renders a record as one JSON object, emitting only allow-listed extras and scrubbed text.

    Redaction lives in the formatter rather than in a logging.Filter because the formatter is the
    last step before bytes leave the process: any handler using it is safe, whatever filters the
    loggers above it do or do not carry.
    """

    def __init__(
        self, service: str, allowed_extra_keys: Iterable[str] = ALLOWED_EXTRA_KEYS
    ) -> None:
        super().__init__()
        self.service = service
        self.allowed_extra_keys = frozenset(allowed_extra_keys)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(_message_of(record)),
            "service": self.service,
        }
        line.update(_trace_context())
        line.update(self._allowed_extras(record))
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = describe_exception(record.exc_info[1])
        if record.stack_info:
            line["stack"] = scrub(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)

    def _allowed_extras(self, record: logging.LogRecord) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        for key, value in record.__dict__.items():
            if key in _STANDARD_RECORD_ATTRIBUTES or key not in self.allowed_extra_keys:
                continue
            extras[key] = scrub(value) if isinstance(value, str) else value
        return extras


def describe_exception(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    """An exception as type, scrubbed message and frames (file:line in function), with its cause.

    Frames carry no source text or local variables, so no data values can leak through them.
    """
    described: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": scrub(str(exc)),
        "frames": _frames(exc.__traceback__),
    }
    chained = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if chained is not None and depth + 1 < _MAX_EXCEPTION_CHAIN:
        described["cause"] = describe_exception(chained, depth + 1)
    return described


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record in the process, as one JSON line each, to stderr (or `stream`).

    Replaces the root logger's handlers, so no plain-text handler installed earlier can still
    write unscrubbed text. Safe to call again (tests, reloads): the last call wins.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLogFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Uvicorn installs its own plain-text handlers; route its records through ours instead.
    # (Start uvicorn with log_config=None so it does not reinstall them afterwards.)
    for name in ("uvicorn", "uvicorn.error"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # No access log: it holds client addresses, which are staff's personal data. Request counts,
    # latencies and statuses come from /metrics and the traces instead.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not lose the log line
        return str(record.msg)


def _trace_context() -> dict[str, str]:
    """The current OpenTelemetry trace and span ids, so a log line can be found from its trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def _frames(tb: TracebackType | None) -> list[str]:
    return [
        f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in traceback.extract_tb(tb)
    ]
