"""The one place that reads and writes pupils' personal data and observation notes.

Names, dates of birth, UPNs, gender, year groups and the free-text notes of observations never go
into events, read models or logs: they live in two tables of their own and nothing but this class
touches them. Every field is sealed with the pupil's data key (the consent service's, through a
PupilKeyring; AES-256-GCM bound to trust, pupil and field) before it is written and opened when
read, so erasing the pupil (destroying the key) makes every copy unreadable, backups included.
UPNs are looked up by a keyed blind index (pupil_keys.BlindIndex), never by value.

Failure modes, as docs/consent.md asks: an erased pupil (DataKeyDestroyed) is skipped by bulk
reads and raised by single reads; any other DataKeyError (consent unreachable, a refused token)
propagates: nothing is written unsealed or shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment.domain.roster import PupilDetails
from services.assessment.pupil_keys import BlindIndex, keys_for
from services.assessment.tables import observation_notes, pupil_personal_data
from shared.datakeys import DataKey, DataKeyDestroyed, DataKeyError, PupilKeyring

# The sealed columns of pupil_personal_data; each is sealed under "assessment.pupil.<column>".
COLUMNS = ("upn", "legal_surname", "legal_forename", "preferred_surname", "preferred_forename",
           "date_of_birth", "gender", "year_group")
NOTE_FIELD = "assessment.observation_note"


def field_name(column: str) -> str:
    return f"assessment.pupil.{column}"


@dataclass(frozen=True)
class Note:
    observation_id: UUID
    pupil_id: UUID
    trust_id: UUID
    academy_id: UUID
    text: str


@dataclass(frozen=True)
class OnFile:
    """A pupil of an academy as the import sees them: opened details, or None when the import
    does not need them (on the roll but absent from the file)."""

    pupil_id: UUID
    upn_index: str
    details: PupilDetails | None


class PersonalDataRepository:
    """Pupils' details and observation notes, by pseudonymous id; callers have checked scope."""

    _details = pupil_personal_data
    _notes = observation_notes

    def __init__(self, keyring: PupilKeyring, index: BlindIndex) -> None:
        self.keyring = keyring
        self.index = index

    # --- Details --------------------------------------------------------------------------------

    async def save_details(
        self, conn: AsyncConnection, trust_id: UUID, academy_id: UUID, details: Mapping[UUID, PupilDetails]
    ) -> None:
        """Insert or replace the details of these pupils (an MIS import's new and changed rows)."""
        if not details:
            return
        keys = await self._keys_or_raise(trust_id, details)
        rows = [
            {"pupil_id": pupil_id, "trust_id": trust_id, "academy_id": academy_id,
             "upn_index": self.index.upn(trust_id, d.upn), **_sealed(keys[pupil_id], d)}
            for pupil_id, d in details.items()
        ]
        statement = insert(self._details).values(rows)
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[self._details.c.pupil_id],
                set_={**{name: statement.excluded[name] for name in ("upn_index", *COLUMNS)}, "updated_at": func.now()},
            )
        )

    async def details(self, conn: AsyncConnection, pupil_ids: Iterable[UUID]) -> dict[UUID, PupilDetails]:
        """The opened details of these pupils; erased pupils (no row, or a destroyed key) are absent."""
        ids = list(pupil_ids)
        if not ids:
            return {}
        rows = list(await conn.execute(select(self._details).where(self._details.c.pupil_id.in_(ids))))
        return await self._opened(rows)

    async def dates_of_birth(self, conn: AsyncConnection, pupils: Sequence[tuple[UUID, UUID]]
                             ) -> dict[UUID, date | DataKeyError]:
        """pupil_id → date of birth, or the DataKeyError that pupil's key failed with (one pupil's
        failure does not hold up the others); pupils without a row are absent."""
        t = self._details
        ids = [p for _, p in pupils]
        if not ids:
            return {}
        rows = list(await conn.execute(select(t.c.pupil_id, t.c.trust_id, t.c.date_of_birth).where(t.c.pupil_id.in_(ids))))

        async def one(row: Any) -> date | DataKeyError:
            try:
                key = await self.keyring.key_for(row.trust_id, row.pupil_id)
                return date.fromisoformat(key.open_json(row.date_of_birth, field_name("date_of_birth")))
            except DataKeyError as error:
                return error

        return dict(zip([r.pupil_id for r in rows], await asyncio.gather(*(one(r) for r in rows)), strict=True))

    async def on_file(self, conn: AsyncConnection, trust_id: UUID, academy_id: UUID, upns: Iterable[str]
                      ) -> tuple[dict[str, OnFile], list[OnFile]]:
        """For an import: the academy's pupils whose UPN is among `upns` (by UPN, details opened), and
        the academy's other pupils (details not opened: only their ids matter to a whole-roll import)."""
        wanted = {self.index.upn(trust_id, upn): upn for upn in upns}
        t = self._details
        rows = list(await conn.execute(select(t).where(t.c.academy_id == academy_id)))
        matched = [r for r in rows if r.upn_index in wanted]
        opened = await self._opened(matched)
        by_upn = {wanted[r.upn_index]: OnFile(r.pupil_id, r.upn_index, opened[r.pupil_id])
                  for r in matched if r.pupil_id in opened}
        others = [OnFile(r.pupil_id, r.upn_index, None) for r in rows if r.upn_index not in wanted]
        return by_upn, others

    # --- Notes ----------------------------------------------------------------------------------

    async def save_notes(self, conn: AsyncConnection, notes: Sequence[Note]) -> None:
        if not notes:
            return
        keys = await keys_for(self.keyring, [(n.trust_id, n.pupil_id) for n in notes])
        for key in keys.values():
            if isinstance(key, DataKeyDestroyed):
                raise key
        await conn.execute(
            insert(self._notes).values([
                {"observation_id": n.observation_id, "pupil_id": n.pupil_id, "trust_id": n.trust_id,
                 "academy_id": n.academy_id,
                 "note": keys[n.pupil_id].seal_text(n.text, _note_field(n.observation_id))}  # type: ignore[union-attr]
                for n in notes
            ])
        )

    async def notes(self, conn: AsyncConnection, observation_ids: Iterable[UUID]) -> dict[UUID, str]:
        """Opened notes by observation; an erased pupil's notes are absent."""
        ids = list(observation_ids)
        if not ids:
            return {}
        t = self._notes
        rows = list(await conn.execute(
            select(t.c.observation_id, t.c.pupil_id, t.c.trust_id, t.c.note).where(t.c.observation_id.in_(ids))
        ))
        keys = await keys_for(self.keyring, [(r.trust_id, r.pupil_id) for r in rows])
        return {
            r.observation_id: keys[r.pupil_id].open_text(r.note, _note_field(r.observation_id))  # type: ignore[union-attr]
            for r in rows if not isinstance(keys[r.pupil_id], DataKeyDestroyed)
        }

    # --- Helpers --------------------------------------------------------------------------------

    async def _keys_or_raise(self, trust_id: UUID, pupil_ids: Iterable[UUID]) -> dict[UUID, DataKey]:
        keys = await keys_for(self.keyring, [(trust_id, p) for p in pupil_ids])
        for key in keys.values():
            if isinstance(key, DataKeyDestroyed):
                raise key  # never write anything about an erased pupil
        return keys  # type: ignore[return-value]

    async def _opened(self, rows: Sequence[Any]) -> dict[UUID, PupilDetails]:
        keys = await keys_for(self.keyring, [(r.trust_id, r.pupil_id) for r in rows])
        found = {}
        for row in rows:
            key = keys[row.pupil_id]
            if not isinstance(key, DataKeyDestroyed):
                found[row.pupil_id] = _opened(key, row)
        return found


def _note_field(observation_id: UUID) -> str:
    # Bound to the observation too: a note cannot be moved to another of the pupil's observations.
    return f"{NOTE_FIELD}/{observation_id}"


def _sealed(key: DataKey, details: PupilDetails) -> dict[str, str]:
    values: dict[str, Any] = {name: getattr(details, name) for name in COLUMNS}
    values["date_of_birth"] = details.date_of_birth.isoformat()
    # Every column sealed, optional ones too (JSON null): the ciphertext does not say which are set.
    return {name: key.seal_json(value, field_name(name)) for name, value in values.items()}


def _opened(key: DataKey, row: Any) -> PupilDetails:
    values = {name: key.open_json(getattr(row, name), field_name(name)) for name in COLUMNS}
    values["date_of_birth"] = date.fromisoformat(values["date_of_birth"])
    return PupilDetails(**values)
