"""Refusing an event whose tenant contradicts what a consumer already knows.

Every event carries its trust and academy (ce_trustid, ce_academyid), and projections write
rows under them. A pupil never changes trust and an academy belongs to one trust, so an event
that claims another trust for a pupil the service already knows, or puts a known academy in
another trust, is not a fact: it is a bug or an attack, and applying it would write one trust's
data under another or change another trust's rows. The consumer dead-letters it at once (no
retry can make it right) with a reason that names the attribute, never a value.

What a service knows is its roster: a table of (pupil_id, trust_id, academy_id) it keeps from
the events it applied (or, for the assessment service, its own truth). An event about a pupil
or an academy it has never seen is taken as it comes: there is nothing to contradict yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from uuid import UUID

from sqlalchemy import Table, Uuid, column, select, values
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events.envelope import Envelope
from shared.events.registry import Event

TRUST_LEVEL = UUID(int=0)
"""The academy of an event about the whole trust: in no academy, so never checked."""


class TenantMismatch(Exception):
    """An event contradicts the tenancy the consumer knows: permanent, dead-lettered at once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def pupils_of(envelope: Envelope[Event]) -> Iterator[UUID]:
    """The pupils an event is about: its pupil_id and, for a group, its pupil_ids."""
    pupil_id = getattr(envelope.data, "pupil_id", None)
    if isinstance(pupil_id, UUID):
        yield pupil_id
    for member in getattr(envelope.data, "pupil_ids", None) or ():
        if isinstance(member, UUID):
            yield member


class TenancyGuard:
    """Checks batches of events against a roster of (pupil_id, trust_id, academy_id).

    Which trust an academy belongs to never changes, so what the guard learns of it is kept (a
    few thousand academies at most): a batch of known academies costs only the pupils' query, and
    the roster needs no index on academy_id (an unknown academy's probe stops at its first row).
    """

    def __init__(self, roster: Table, max_academies: int = 50_000) -> None:
        self.roster = roster
        self.max_academies = max_academies
        self._academy_trust: dict[UUID, UUID] = {}

    async def refuse_other_tenants(self, conn: AsyncConnection, envelopes: Sequence[Envelope[Event]]) -> None:
        """Raise TenantMismatch if any event claims another trust for a pupil or an academy than
        the roster (or an earlier event of the same batch) says."""
        pupils: dict[UUID, UUID] = {}
        academies: dict[UUID, UUID] = {}
        for envelope in envelopes:
            for pupil_id in pupils_of(envelope):
                if pupils.setdefault(pupil_id, envelope.trust_id) != envelope.trust_id:
                    raise TenantMismatch("events of one batch claim different trusts (ce_trustid) for one pupil")
            if (envelope.academy_id != TRUST_LEVEL
                    and academies.setdefault(envelope.academy_id, envelope.trust_id) != envelope.trust_id):
                raise TenantMismatch("events of one batch claim different trusts (ce_trustid) for one academy")
        r = self.roster.c
        if pupils:
            known = await conn.execute(select(r.pupil_id, r.trust_id).where(r.pupil_id.in_(list(pupils))))
            if any(trust_id != pupils[pupil_id] for pupil_id, trust_id in known):
                raise TenantMismatch("pupil_id: the pupil belongs to another trust than ce_trustid")
        await self._learn([a for a in academies if a not in self._academy_trust], conn)
        for academy_id, trust_id in academies.items():
            if self._academy_trust.get(academy_id, trust_id) != trust_id:
                raise TenantMismatch("ce_academyid: the academy belongs to another trust than ce_trustid")

    async def _learn(self, academies: list[UUID], conn: AsyncConnection) -> None:
        if not academies:
            return
        r = self.roster.c
        claimed = values(column("academy_id", Uuid), name="claimed").data([(a,) for a in academies])
        trust = select(r.trust_id).where(r.academy_id == claimed.c.academy_id).limit(1).scalar_subquery()
        for academy_id, trust_id in await conn.execute(select(claimed.c.academy_id, trust)):
            if trust_id is not None and len(self._academy_trust) < self.max_academies:
                self._academy_trust[academy_id] = trust_id
