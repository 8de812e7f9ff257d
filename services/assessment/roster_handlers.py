"""The roster's commands: a trust and its academies registered, an MIS pupil export applied
(enrolments, class changes, leavers, with each pupil's personal data sealed), groups formed. Like
handlers.py: load, decide (domain/roster.py), append and project in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment import queries
from services.assessment.domain.errors import AcademyOfAnotherTrust, UnknownPupil
from services.assessment.domain.observations import pupil_stream
from services.assessment.domain.roster import RosterEntry, RosterPlan, parse_mis_csv, plan_import
from services.assessment.handlers import Context
from services.assessment.privacy import enqueue_retention_clock
from services.assessment.projections import project
from services.assessment.scope import academy_in_scope
from services.assessment.tables import academies, classes, group_members, groups, trusts
from shared.auth import Principal
from shared.events.assessment import PupilClassChanged, PupilEnrolled, PupilLeft
from shared.store.emission import Emission
from shared.store.event_store import NO_STREAM
from shared.tenancy import across_trusts


async def register_academy(conn: AsyncConnection, principal: Principal, academy_id: UUID, name: str) -> bool:
    """Register (or rename) an academy of the caller's trust; True when it is new."""
    async with across_trusts(conn):  # an academy id is registered to one trust only
        existing = await queries.academy(conn, academy_id)
    if existing is not None and existing.trust_id != principal.trust_id:
        raise AcademyOfAnotherTrust(academy_id)
    await conn.execute(insert(trusts).values(trust_id=principal.trust_id).on_conflict_do_nothing())
    await conn.execute(
        insert(academies).values(academy_id=academy_id, trust_id=principal.trust_id, name=name)
        .on_conflict_do_update(index_elements=[academies.c.academy_id], set_={"name": name})
    )
    return existing is None


async def register_trust(conn: AsyncConnection, principal: Principal, name: str) -> None:
    await conn.execute(
        insert(trusts).values(trust_id=principal.trust_id, name=name)
        .on_conflict_do_update(index_elements=[trusts.c.trust_id], set_={"name": name})
    )


@dataclass
class ImportReport:
    rows: int
    enrolled: list[dict[str, Any]]
    rejoined: int
    moved: int
    updated: int
    left: int
    unchanged: int
    classes_created: list[str]
    ignored_columns: list[str]


async def import_roster(conn: AsyncConnection, ctx: Context, principal: Principal, academy_id: UUID,
                        data: bytes, whole_roll: bool) -> ImportReport:
    """Apply an MIS pupil export: new pupils, changes, leavers; the same file twice changes nothing."""
    academy = await academy_in_scope(conn, principal, academy_id)
    # One import per academy at a time: two at once would both see a new UPN as new.
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"roster.{academy_id}"})
    today = ctx.clock().date()
    rows, ignored = parse_mis_csv(data, today)
    names = await queries.class_names(conn, academy_id)
    roster = await _roster_by_upn(conn, ctx, academy.trust_id, academy_id, names, [row.details.upn for row in rows])
    plan = plan_import(rows, roster, whole_roll, today)
    class_ids, created = await _ensure_classes(conn, academy, names, plan)
    emission = Emission(ctx.store, academy.trust_id)
    enrolled = _enrolment_events(emission, academy_id, plan, class_ids, today)
    details = {pupil_id: row.details for pupil_id, row in enrolled}
    details.update({pupil_id: row.details for pupil_id, row in plan.rejoin})
    details.update(dict(plan.update_details))
    await ctx.personal.save_details(conn, academy.trust_id, academy_id, details)
    # Consent counts retention from the date of birth: tell it, reliably (privacy.py's outbox).
    await enqueue_retention_clock(conn, academy.trust_id, academy_id, details)
    expected = {pupil_stream(pupil_id): NO_STREAM for pupil_id, _ in enrolled}
    await emission.append(conn, expected)
    await project(conn, emission.in_order)
    return ImportReport(
        rows=len(rows), enrolled=[{"row": row.row, "pupil_id": pupil_id} for pupil_id, row in enrolled],
        rejoined=len(plan.rejoin), moved=len(plan.move), updated=len(plan.update_details), left=len(plan.leave),
        unchanged=plan.unchanged, classes_created=created, ignored_columns=ignored,
    )


async def _roster_by_upn(conn: AsyncConnection, ctx: Context, trust_id: UUID, academy_id: UUID,
                         names: dict[UUID, str], upns: list[str]) -> dict[str, RosterEntry]:
    """The academy's roster as plan_import reads it: the pupils the file names, by UPN (matched
    through the blind index, details opened to see what changed), and the others under a key that
    is never a UPN (a whole-roll import only needs to know they are on roll)."""
    named, others = await ctx.personal.on_file(conn, trust_id, academy_id, upns)
    rows = {p.pupil_id: p for p in await queries.pupils_in(conn, academy_id=academy_id, on_roll_only=False)}

    def entry(found: Any) -> RosterEntry:
        row = rows[found.pupil_id]
        return RosterEntry(found.pupil_id, found.details, names.get(row.class_id) if row.class_id else None, row.on_roll)

    roster = {upn: entry(found) for upn, found in named.items() if found.pupil_id in rows}
    roster.update({f"#{found.upn_index}": entry(found) for found in others if found.pupil_id in rows})
    return roster


async def _ensure_classes(conn: AsyncConnection, academy: Any, names: dict[UUID, str], plan: RosterPlan
                          ) -> tuple[dict[str, UUID], list[str]]:
    ids = {name: class_id for class_id, name in names.items()}
    wanted = {row.reg_group for row in plan.enrol} | {row.reg_group for _, row in plan.rejoin} | {name for _, name in plan.move}
    created = sorted(name for name in wanted if name is not None and name not in ids)
    for name in created:
        ids[name] = uuid.uuid4()
        await conn.execute(insert(classes).values(class_id=ids[name], trust_id=academy.trust_id,
                                                  academy_id=academy.academy_id, name=name))
    return ids, created


def _enrolment_events(emission: Emission, academy_id: UUID, plan: RosterPlan, class_ids: dict[str, UUID], today: date
                      ) -> list[tuple[UUID, Any]]:
    def class_of(name: str | None) -> UUID | None:
        return class_ids[name] if name is not None else None

    enrolled = [(uuid.uuid4(), row) for row in plan.enrol]
    for pupil_id, row in [*enrolled, *plan.rejoin]:
        emission.add(pupil_stream(pupil_id), academy_id,
                     PupilEnrolled(pupil_id=pupil_id, class_id=class_of(row.reg_group), enrolled_on=row.admission_date or today))
    for pupil_id, name in plan.move:
        emission.add(pupil_stream(pupil_id), academy_id,
                     PupilClassChanged(pupil_id=pupil_id, class_id=class_of(name), changed_on=today))
    for pupil_id, left_on in plan.leave:
        emission.add(pupil_stream(pupil_id), academy_id, PupilLeft(pupil_id=pupil_id, left_on=left_on))
    return enrolled


async def create_group(conn: AsyncConnection, principal: Principal, academy_id: UUID, name: str,
                       pupil_ids: Sequence[UUID]) -> UUID:
    academy = await academy_in_scope(conn, principal, academy_id)
    found = await queries.pupil_rows(conn, pupil_ids)
    unknown = [p for p in pupil_ids if p not in found or found[p].academy_id != academy_id]
    if unknown:
        raise UnknownPupil(unknown)
    group_id = uuid.uuid4()
    await conn.execute(insert(groups).values(group_id=group_id, trust_id=academy.trust_id, academy_id=academy_id,
                                             name=name, created_by=principal.subject))
    if pupil_ids:
        await conn.execute(insert(group_members).values([
            {"group_id": group_id, "pupil_id": p, "trust_id": academy.trust_id, "academy_id": academy_id}
            for p in dict.fromkeys(pupil_ids)
        ]))
    return group_id
