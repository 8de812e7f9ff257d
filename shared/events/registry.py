"""The published language: the base class of every event and the registry of event types."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

E = TypeVar("E", bound="Event")


class Event(BaseModel):
    """A fact that happened, as other services see it.

    Each concrete event names its CloudEvents ``type`` with the schema version in it
    (``flourish.assessment.ObservationRecorded.v1``): a breaking change is a new type, so old
    messages on a topic always decode with the model they were written with.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    # The bounded context that publishes it; also names its Kafka topic.
    context: ClassVar[str]
    # The fields that say something about the child beyond pseudonymous ids (a level, a score, a
    # plan's targets): sealed with each subject pupil's data key wherever the event is stored or
    # published (shared.events.sealing). Everything else is readable: docs/consent.md lists why.
    personal: ClassVar[frozenset[str]] = frozenset()

    def subjects(self) -> list[UUID]:
        """The pupils the event describes, whose keys seal its personal fields (none: not sealed)."""
        pupil_id = getattr(self, "pupil_id", None)
        return [pupil_id] if isinstance(pupil_id, UUID) else []

    def partition_key(self) -> str | None:
        """The pupil the event is about (a pseudonymous UUID), so a pupil's events stay in order.

        Events that are not about one pupil return None and are keyed by their stream.
        """
        pupil_id = getattr(self, "pupil_id", None)
        return str(pupil_id) if pupil_id is not None else None


class UnknownEventType(LookupError):
    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}: no model is registered for it")
        self.event_type = event_type


_registry: dict[str, type[Event]] = {}


def register(event_type: str, context: str) -> Callable[[type[E]], type[E]]:
    """Class decorator: give an event model its type and make it decodable."""

    def decorate(cls: type[E]) -> type[E]:
        existing = _registry.get(event_type)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {event_type!r} is registered twice")
        cls.event_type = event_type
        cls.context = context
        _registry[event_type] = cls
        return cls

    return decorate


def model_for(event_type: str) -> type[Event]:
    try:
        return _registry[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def registered_types() -> dict[str, type[Event]]:
    return dict(_registry)
