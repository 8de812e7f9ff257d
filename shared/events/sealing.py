"""Sealed event payloads: what an event says about a child travels only under that child's data key.

An event model declares which of its fields are personal (`Event.personal`: a level, a statement,
a score, a plan's targets, a session's activities). In memory the model stays plain; on the way to
a table or a topic (`EventSealing.seal`, called by the event store, the one place appends go
through) those fields leave the JSON and come back as one AES-256-GCM ciphertext per subject
pupil under `"$sealed"`:

    {"observation_id": "…", "pupil_id": "…", "observer_id": "…", "observed_at": "…", …,
     "$sealed": {"v": 1, "fields": ["has_note", "level", "statement_id"],
                 "by_pupil": {"<pupil_id>": "fl1.…"}}}

Each ciphertext is bound (associated data) to the trust, the pupil, the event's type and its id,
so it cannot be replayed into another event or opened as another pupil's. An event about several
pupils seals one copy per pupil, each under that pupil's key (today every event names one subject,
`pupil_id`: a group plan is one PlanIssued per child). An event with no subject pupil (a class
plan's, about a class) is not sealed.

`EventSealing.open` reverses it with the service's keyring: the personal fields of the first copy
that opens; `None` when every subject's key was destroyed (the pupil was erased: the caller skips
the event and records so). Erased pupils are also dropped from the event's `pupil_ids` (a group's
other members), so a consumer never re-creates an erased child's membership. A key service that
cannot be reached raises DataKeyUnavailable: the caller waits and retries, never skips. A copy
that does not open with the pupil's live key (tampered, moved) raises SealedFieldUnreadable.

Payloads written before sealing (no `"$sealed"`) still decode as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import orjson

from shared.datakeys import DataKey, DataKeyDestroyed, DataKeyUnavailable, PupilKeyring, SealedFieldUnreadable
from shared.events.registry import Event
from shared.telemetry import meter

log = logging.getLogger(__name__)

SEALED_KEY = "$sealed"
SEAL_VERSION = 1
# Key fetches in flight at once for one batch (a whole class's scores).
KEY_FETCH_CONCURRENCY = 16
_ASK = object()  # not known yet: ask the keyring


events_sealing = meter.create_counter(
    "flourish_events_sealing", unit="{event}",
    description="Sealed events found erased on opening (every subject's key destroyed): skipped",
)


class SealingUnavailable(DataKeyUnavailable):
    """An event with personal fields was to be written or read where no keyring is configured."""


def aad_field(event_type: str, event_id: UUID) -> str:
    """The field name a sealed copy is bound to: this event, of this type."""
    return f"event/{event_type}/{event_id}"


def is_sealed(data: Mapping[str, Any]) -> bool:
    return SEALED_KEY in data


_FIELDS: dict[type[Event], list[str]] = {}


def _sorted_fields(model: type[Event]) -> list[str]:
    fields = _FIELDS.get(model)
    if fields is None:
        fields = _FIELDS[model] = sorted(model.personal)
    return fields


class EventSealing:
    """Seals and opens events' personal fields with a service's keyring (`PupilKeyring`)."""

    def __init__(self, keyring: PupilKeyring, *, remember: bool = False) -> None:
        """`remember`: keep every key asked for (an erased pupil's as None) for this object's life,
        in memory only — a rebuild's, which asks once per pupil and drops them at its end. Errors
        (unavailable, refused) are never kept: the next event asks again."""
        self.keyring = keyring
        self._known: dict[tuple[UUID, UUID], DataKey | None] | None = {} if remember else None
        self._uuids: dict[str, UUID] | None = {} if remember else None

    async def _key(self, trust_id: UUID, pupil_id: UUID) -> DataKey | None:
        known = self._known
        if known is not None and (found := known.get((trust_id, pupil_id), _ASK)) is not _ASK:
            return found  # type: ignore[return-value]
        try:
            key: DataKey | None = await self.keyring.key_for(trust_id, pupil_id)
        except DataKeyDestroyed:
            key = None
        if known is not None:
            known[(trust_id, pupil_id)] = key
        return key

    async def _keys(self, trust_id: UUID, pupil_ids: list[UUID]) -> dict[UUID, DataKey | None]:
        """Each pupil's key, None for an erased pupil; DataKeyUnavailable raises (fail closed)."""
        if len(pupil_ids) == 1:  # the usual case: no gate, no gather
            return {pupil_ids[0]: await self._key(trust_id, pupil_ids[0])}
        unique = list(dict.fromkeys(pupil_ids))
        if len(unique) == 1:
            return {unique[0]: await self._key(trust_id, unique[0])}
        gate = asyncio.Semaphore(KEY_FETCH_CONCURRENCY)

        async def one(pupil_id: UUID) -> DataKey | None:
            async with gate:
                return await self._key(trust_id, pupil_id)

        found = await asyncio.gather(*(one(p) for p in unique))
        return dict(zip(unique, found, strict=True))

    async def seal(self, event: Event, event_id: UUID, trust_id: UUID) -> dict[str, Any]:
        """The event's JSON with its personal fields sealed under each subject pupil's key.

        Raises DataKeyDestroyed when every subject was erased (nothing may be written about them)."""
        data: dict[str, Any] = orjson.loads(event.model_dump_json())
        fields = _sorted_fields(type(event))
        subjects = event.subjects()
        if not fields or not subjects:
            return data
        personal = orjson.dumps({name: data.pop(name) for name in fields})
        keys = await self._keys(trust_id, subjects)
        field = aad_field(event.event_type, event_id)
        by_pupil = {str(pupil_id): key.seal(personal, field) for pupil_id, key in keys.items() if key is not None}
        if not by_pupil:
            raise DataKeyDestroyed(subjects[0])
        data[SEALED_KEY] = {"v": SEAL_VERSION, "fields": fields, "by_pupil": by_pupil}
        return data

    async def open(self, model: type[Event], data: Mapping[str, Any], event_id: UUID, trust_id: UUID) -> Event | None:
        """The event, its personal fields opened; None when every subject pupil was erased.

        Raises DataKeyUnavailable (retry later), SealedFieldUnreadable (tampered: never retried),
        or pydantic's ValidationError (the opened data is not a valid event)."""
        body = dict(data)
        envelope = body.pop(SEALED_KEY, None)
        if envelope is None:  # a payload from before sealing: as it was written
            return model.model_validate(body)
        if not isinstance(envelope, dict) or envelope.get("v") != SEAL_VERSION or not isinstance(
                envelope.get("by_pupil"), dict) or not envelope["by_pupil"]:
            raise SealedFieldUnreadable("the sealed part of the event is not in a known format")
        members: list[Any] = body["pupil_ids"] if isinstance(body.get("pupil_ids"), list) else []
        field = aad_field(model.event_type, event_id)
        by_pupil: dict[str, Any] = envelope["by_pupil"]
        try:
            copies = {self._uuid(pupil): sealed for pupil, sealed in by_pupil.items()}
            group = [self._uuid(str(p)) for p in members]
        except (ValueError, TypeError, AttributeError):
            raise SealedFieldUnreadable("the sealed part names a pupil that is not a UUID") from None
        keys = await self._keys(trust_id, [*copies, *group] if group else list(copies))
        personal: Any = None
        for pupil_id, sealed in copies.items():
            key = keys[pupil_id]
            if key is not None and isinstance(sealed, str):
                personal = orjson.loads(key.open(sealed, field))
                break
        if personal is None:
            events_sealing.add(1, {"event_type": model.event_type, "outcome": "erased"})
            return None
        if not isinstance(personal, dict) or not body.keys().isdisjoint(personal):
            raise SealedFieldUnreadable("the sealed part of the event does not hold its personal fields")
        body.update(personal)
        if group and (erased := {pupil for pupil, key in keys.items() if key is None}):
            body["pupil_ids"] = [p for p in members if self._uuid(str(p)) not in erased]
        return model.__pydantic_validator__.validate_python(body)  # type: ignore[no-any-return]

    def _uuid(self, text: str) -> UUID:
        # A remembering sealing (a rebuild's) parses each pupil's id once, as it asks for the key once.
        uuids = self._uuids
        if uuids is None:
            return UUID(text)
        found = uuids.get(text)
        if found is None:
            found = uuids[text] = UUID(text)
        return found


async def open_data(sealing: EventSealing | None, model: type[Event], data: Mapping[str, Any], event_id: UUID,
                    trust_id: UUID) -> Event | None:
    """Open an event's data with `sealing` (None: this process holds no keyring; a sealed payload
    then raises SealingUnavailable rather than being read or skipped)."""
    if not is_sealed(data):
        return model.model_validate(dict(data))
    if sealing is None:
        raise SealingUnavailable(f"a sealed {model.event_type} cannot be opened: no keyring is configured")
    return await sealing.open(model, data, event_id, trust_id)
