"""The published language between services: event models, and their CloudEvents envelope."""

from shared.events import assessment, audit, consent, planning, reporting  # noqa: F401  (registers)
from shared.events.envelope import (
    Envelope,
    InvalidMessage,
    decode,
    encode,
    topic_for,
)
from shared.events.registry import Event, UnknownEventType, model_for, register

__all__ = [
    "Envelope",
    "Event",
    "InvalidMessage",
    "UnknownEventType",
    "decode",
    "encode",
    "model_for",
    "register",
    "topic_for",
]
