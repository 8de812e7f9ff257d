"""The one place that reads and writes pupils' personal data and observation notes.

Names, dates of birth, UPNs, gender, year groups and the free-text notes of observations never go
into events, read models or logs: they live in two tables of their own and nothing but this class
touches them. Per-pupil envelope encryption (the consent service's data keys, crypto-shredding on
erasure) arrives with the consent issue; it changes this class alone: seal on write, open on read,
and look UPNs up by a keyed hash (a blind index) instead of by value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment.domain.roster import PupilDetails
from services.assessment.tables import observation_notes, pupil_personal_data


@dataclass(frozen=True)
class Note:
    observation_id: UUID
    pupil_id: UUID
    trust_id: UUID
    academy_id: UUID
    text: str


class PersonalDataRepository:
    """Pupils' details and observation notes, by pseudonymous id; callers have checked scope."""

    _details = pupil_personal_data
    _notes = observation_notes

    async def save_details(
        self, conn: AsyncConnection, trust_id: UUID, academy_id: UUID, details: Mapping[UUID, PupilDetails]
    ) -> None:
        """Insert or replace the details of these pupils (an MIS import's new and changed rows)."""
        if not details:
            return
        rows = [
            {"pupil_id": pupil_id, "trust_id": trust_id, "academy_id": academy_id, **_columns(d)}
            for pupil_id, d in details.items()
        ]
        statement = insert(self._details).values(rows)
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[self._details.c.pupil_id],
                set_={**{name: statement.excluded[name] for name in _columns_of()}, "updated_at": func.now()},
            )
        )

    async def details(self, conn: AsyncConnection, pupil_ids: Iterable[UUID]) -> dict[UUID, PupilDetails]:
        ids = list(pupil_ids)
        if not ids:
            return {}
        rows = await conn.execute(select(self._details).where(self._details.c.pupil_id.in_(ids)))
        return {row.pupil_id: _details(row) for row in rows}

    async def all_in_academy(self, conn: AsyncConnection, academy_id: UUID) -> dict[UUID, PupilDetails]:
        rows = await conn.execute(select(self._details).where(self._details.c.academy_id == academy_id))
        return {row.pupil_id: _details(row) for row in rows}

    async def save_notes(self, conn: AsyncConnection, notes: Sequence[Note]) -> None:
        if not notes:
            return
        await conn.execute(
            insert(self._notes).values([
                {"observation_id": n.observation_id, "pupil_id": n.pupil_id, "trust_id": n.trust_id,
                 "academy_id": n.academy_id, "note": n.text}
                for n in notes
            ])
        )

    async def notes(self, conn: AsyncConnection, observation_ids: Iterable[UUID]) -> dict[UUID, str]:
        ids = list(observation_ids)
        if not ids:
            return {}
        rows = await conn.execute(
            select(self._notes.c.observation_id, self._notes.c.note).where(self._notes.c.observation_id.in_(ids))
        )
        return {row.observation_id: row.note for row in rows}


def _columns_of() -> tuple[str, ...]:
    return ("upn", "legal_surname", "legal_forename", "preferred_surname", "preferred_forename",
            "date_of_birth", "gender", "year_group")


def _columns(details: PupilDetails) -> dict[str, object]:
    return {name: getattr(details, name) for name in _columns_of()}


def _details(row: object) -> PupilDetails:
    return PupilDetails(**{name: getattr(row, name) for name in _columns_of()})
