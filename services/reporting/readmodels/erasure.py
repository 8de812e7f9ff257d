"""Erasure and retention expiry in the read models (issue 15, item 2).

`PupilErased` (category `all`) and `RetentionExpired` (a category, or `all`) put a tombstone in the
erasure register (`erasure_register`: pupil, category, erasure, when) and delete what the read
models hold of that category for the pupil:

    all            every row naming the pupil; plans of this pupil alone (with their reviews,
                   sessions and closure); the pupil's part of a group plan; `rm_pupils` keeps
                   the roster entry only (pupil, trust, academy: what the tombstone holds), so
                   that an event claiming another trust for the pupil is still refused
    assessments    assessments, strand scores, observations; the profile's assessment fields
    action_plans   the pupil's plans as above, their reviews and sessions
    shared_reports nothing here (sharing/core.py: shares, deliveries, deletion notices)

The projections ask the tombstones before applying a batch (`keep`): an event about an erased
pupil is ignored whenever it arrives, and an event of an expired category that is not newer than
the expiry is ignored too. The live consumer asks the register; a rebuild asks the PupilErased and
RetentionExpired events it reads from the consent topic (the same tombstones, on Kafka), so it
never brings an erased pupil back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import delete, exists, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.readmodels.tables import ERASURES, ReadModelTables
from shared.events.assessment import (
    AssessmentCompleted,
    ObservationRecorded,
    PupilEnrolled,
    PupilLeft,
    StrandScored,
)
from shared.events.consent import DataCategory, PupilErased, RetentionExpired
from shared.events.envelope import Envelope
from shared.events.planning import PlanClosed, PlanIssued, PlanReviewed, SessionLogged

ALL = DataCategory.ALL.value
ASSESSMENTS = DataCategory.ASSESSMENTS.value
ACTION_PLANS = DataCategory.ACTION_PLANS.value
SHARED_REPORTS = DataCategory.SHARED_REPORTS.value

# Which category each projected event belongs to (the roster's belong to `all` only).
CATEGORY_OF: dict[type[Any], str] = {
    PupilEnrolled: ALL, PupilLeft: ALL,
    AssessmentCompleted: ASSESSMENTS, StrandScored: ASSESSMENTS, ObservationRecorded: ASSESSMENTS,
    PlanIssued: ACTION_PLANS, PlanReviewed: ACTION_PLANS, PlanClosed: ACTION_PLANS, SessionLogged: ACTION_PLANS,
}

Found = Mapping[UUID, Mapping[str, datetime]]  # pupil → category → erased (or expired) at


class Tombstones(Protocol):
    async def of(self, conn: AsyncConnection, pupil_ids: Iterable[UUID]) -> Found: ...


class Register:
    """The live tombstones: the erasure register in the database."""

    async def of(self, conn: AsyncConnection, pupil_ids: Iterable[UUID]) -> Found:
        ids = list(set(pupil_ids))
        if not ids:
            return {}
        found: dict[UUID, dict[str, datetime]] = {}
        e = ERASURES.c
        for row in (await conn.execute(select(e.pupil_id, e.data_category, e.erased_at)
                                       .where(e.pupil_id.in_(ids)))).all():
            found.setdefault(row.pupil_id, {})[row.data_category] = row.erased_at
        return found


class Remembered:
    """Tombstones held in memory (a rebuild's, read from the consent topic)."""

    def __init__(self) -> None:
        self.found: dict[UUID, dict[str, datetime]] = {}
        self.roster: dict[UUID, tuple[UUID, UUID, UUID]] = {}  # erased pupils' (pupil, trust, academy)

    def add(self, envelope: Envelope[Any]) -> tuple[UUID, str] | None:
        """Remember an erasure or expiry; (pupil, category), if it is one."""
        grave = tombstone_of(envelope)
        if grave is None:
            return None
        pupil_id, category, at = grave
        self.found.setdefault(pupil_id, {})[category] = at
        if category == ALL:
            self.roster.setdefault(pupil_id, (pupil_id, envelope.trust_id, envelope.academy_id))
        return pupil_id, category

    async def of(self, conn: AsyncConnection, pupil_ids: Iterable[UUID]) -> Found:
        return {p: self.found[p] for p in set(pupil_ids) if p in self.found}


def tombstone_of(envelope: Envelope[Any]) -> tuple[UUID, str, datetime] | None:
    data = envelope.data
    if isinstance(data, PupilErased):
        return data.pupil_id, ALL, data.erased_at
    if isinstance(data, RetentionExpired):
        return data.pupil_id, DataCategory(data.data_category).value, data.expired_at
    return None


def _gone(graves: Mapping[str, datetime] | None, category: str, at: datetime) -> bool:
    if not graves:
        return False
    if ALL in graves:
        return True  # nothing about an erased pupil is ever applied again
    expired = graves.get(category)
    return expired is not None and at <= expired


def _pupils_of(data: Any) -> set[UUID]:
    found = set(getattr(data, "pupil_ids", None) or [])
    if getattr(data, "pupil_id", None) is not None:
        found.add(data.pupil_id)
    return found


async def keep(conn: AsyncConnection, tombstones: Tombstones, events: Sequence[Envelope[Any]]) -> list[Envelope[Any]]:
    """The events of a batch the read models may apply: none about an erased pupil, none of an
    expired category from before the expiry; a group plan loses its erased members (and goes when
    none is left)."""
    graves = await tombstones.of(conn, {p for e in events for p in _pupils_of(e.data)})
    if not graves:
        return list(events)
    return [kept for envelope in events if (kept := admitted(graves, envelope)) is not None]


def admitted(graves: Found, envelope: Envelope[Any]) -> Envelope[Any] | None:
    """One event as `keep` lets it through (`graves`: at least its pupils' tombstones), or None."""
    data = envelope.data
    category = CATEGORY_OF.get(type(data), ALL)
    at = envelope.time if envelope.time.tzinfo else envelope.time.replace(tzinfo=UTC)
    if isinstance(data, PlanIssued):
        members = _pupils_of(data)
        left = {p for p in members if not _gone(graves.get(p), category, at)}
        if left == members:
            return envelope
        if not left:
            return None
        single = data.pupil_id if data.pupil_id in left else None
        return replace(envelope, data=data.model_copy(update={
            "pupil_id": single, "pupil_ids": [p for p in data.pupil_ids if p in left]}))
    pupil_id = getattr(data, "pupil_id", None)
    if pupil_id is None or not _gone(graves.get(pupil_id), category, at):
        return envelope
    return None


async def record(conn: AsyncConnection, envelope: Envelope[Any]) -> tuple[UUID, str, datetime] | None:
    """Put the tombstone of a PupilErased or RetentionExpired in the register (once)."""
    grave = tombstone_of(envelope)
    if grave is None:
        return None
    pupil_id, category, at = grave
    data = envelope.data
    erasure_id = data.erasure_id if isinstance(data, PupilErased) else uuid.uuid5(envelope.id, "retention")
    reason = data.reason.value if isinstance(data, PupilErased) else "retention_expired"
    stmt = insert(ERASURES).values(
        pupil_id=pupil_id, data_category=category, trust_id=envelope.trust_id, academy_id=envelope.academy_id,
        erasure_id=erasure_id, reason=reason, erased_at=at, recorded_at=datetime.now(UTC))
    if isinstance(data, PupilErased):
        # An expiry of `all` is followed by the erasure it causes: the register names the erasure.
        e = ERASURES.c
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=[e.pupil_id, e.data_category],
            set_={"erasure_id": stmt.excluded.erasure_id, "reason": stmt.excluded.reason},
            where=e.trust_id == stmt.excluded.trust_id))
    else:
        await conn.execute(stmt.on_conflict_do_nothing())
    return grave


async def purge(conn: AsyncConnection, t: ReadModelTables, trust_id: UUID | None, pupil_id: UUID, category: str) -> None:
    """Delete what the read models `t` hold of `category` for the pupil (`trust_id` None: every
    trust's, as a rebuild's shadow tables may be purged; the live consumer always names it)."""
    def mine(table: Any) -> Any:
        clause = table.c.pupil_id == pupil_id
        return clause if trust_id is None else clause & (table.c.trust_id == trust_id)

    if category in (ALL, ASSESSMENTS):
        for table in (t.strand_scores, t.observations, t.assessments):
            await conn.execute(delete(table).where(mine(table)))
        if category == ASSESSMENTS:
            await conn.execute(update(t.pupils).where(mine(t.pupils)).values(
                framework_version=None, working_at_strand=None, expected_strand=None, baseline_assessment_id=None,
                latest_assessment_id=None, latest_completed_at=None))
    if category in (ALL, ACTION_PLANS):
        plan_ids = list((await conn.execute(select(t.plan_pupils.c.plan_id).where(mine(t.plan_pupils)))).scalars())
        for table in (t.plan_pupils, t.plan_reviews, t.sessions):
            await conn.execute(delete(table).where(mine(table)))
        if plan_ids:
            m = t.plan_pupils.c
            # A plan of this pupil alone goes whole: its content was about them.
            alone = list((await conn.execute(select(t.plans.c.plan_id).distinct().where(
                t.plans.c.plan_id.in_(plan_ids), ~exists().where(m.plan_id == t.plans.c.plan_id)))).scalars())
            if alone:
                for table in (t.plans, t.plan_closures, t.plan_reviews, t.sessions):
                    await conn.execute(delete(table).where(table.c.plan_id.in_(alone)))
    if category == ALL:
        await conn.execute(update(t.pupils).where(mine(t.pupils)).values(**dict.fromkeys(PUPIL_DATA)))


# What `rm_pupils` holds about a pupil besides the roster's (pupil, trust, academy). An erased pupil's
# row keeps the roster part only — what the tombstone holds too — so that the tenancy guard of every
# consumer (shared/messaging/tenancy.py) still refuses an event that claims another trust for them.
PUPIL_DATA = ("enrolled_on", "left_on", "framework_version", "working_at_strand", "expected_strand",
              "baseline_assessment_id", "latest_assessment_id", "latest_completed_at")


async def keep_on_roster(conn: AsyncConnection, t: ReadModelTables, roster: Iterable[tuple[UUID, UUID, UUID]]) -> None:
    """Put erased pupils' roster entries (pupil, trust, academy; nothing else) in `t` (a rebuild's)."""
    rows = [{"pupil_id": p, "trust_id": trust, "academy_id": academy} for p, trust, academy in roster]
    for start in range(0, len(rows), 1000):
        await conn.execute(insert(t.pupils).values(rows[start:start + 1000]).on_conflict_do_nothing())


async def erased(conn: AsyncConnection, trust_id: UUID, pupil_id: UUID) -> Any:
    """The pupil's erasure (category `all`) in the trust, if any: what answers 410."""
    e = ERASURES.c
    return (await conn.execute(select(ERASURES).where(
        e.pupil_id == pupil_id, e.trust_id == trust_id, e.data_category == ALL))).first()
