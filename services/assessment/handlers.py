"""One function per command: load what the decision needs, decide (domain/), append the events
and project them, all in the caller's transaction, so a command happens whole or not at all.

Scope is checked against the trust and academy the records are stored under, never against ids
a request sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment import queries
from services.assessment.domain.assessment import Assessment, assessment_stream, ordered_strands
from services.assessment.domain.errors import (
    AcademyOfAnotherTrust,
    AlreadyCorrected,
    AssessmentAlreadyCompleted,
    DuplicateObservation,
    EmptyCohort,
    InvalidAssessmentRequest,
    MissingRatings,
    PupilNotOnRoll,
    RatingProblem,
    RatingsRejected,
    UnknownAcademy,
    UnknownAssessment,
    UnknownClass,
    UnknownGroup,
    UnknownObservation,
    UnknownPupil,
    UnknownScreening,
)
from services.assessment.domain.framework import Framework
from services.assessment.domain.observations import AssessmentSlot, Rating, decide_observations, pupil_stream
from services.assessment.domain.roster import RosterEntry, RosterPlan, parse_mis_csv, plan_import
from services.assessment.domain.screening import age_in_months
from services.assessment.framework_store import PLATFORM, FrameworkStore, LoadOutcome
from services.assessment.personal_data import Note, PersonalDataRepository
from services.assessment.privacy import enqueue_retention_clock
from services.assessment.projections import observation_recorded, project
from services.assessment.tables import academies, classes, group_members, groups, trusts
from shared.auth import Principal, Role, ensure_scope
from shared.events.assessment import (
    AssessmentStarted,
    ObservationRecorded,
    PupilClassChanged,
    PupilEnrolled,
    PupilLeft,
)
from shared.events.registry import Event
from shared.store.emission import Emission
from shared.store.event_store import NO_STREAM, EventStore
from shared.tenancy import across_trusts


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """What handlers work with; app.py builds one per service, tests may build their own."""

    store: EventStore
    frameworks: FrameworkStore = field(default_factory=FrameworkStore)
    # Sealing needs the consent service's keys: None where a caller touches no personal data
    # (loading a framework at start-up).
    personal_data: PersonalDataRepository | None = None
    clock: Callable[[], datetime] = utc_now

    @property
    def personal(self) -> PersonalDataRepository:
        if self.personal_data is None:
            raise RuntimeError("this context has no personal-data repository (no data keys)")
        return self.personal_data


# --- Tenancy and roster ------------------------------------------------------------------------


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


async def academy_in_scope(conn: AsyncConnection, principal: Principal, academy_id: UUID) -> Any:
    row = await queries.academy(conn, academy_id)
    if row is None:
        raise UnknownAcademy(academy_id)
    ensure_scope(principal, row.trust_id, row.academy_id)
    return row


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


# --- Observations -------------------------------------------------------------------------------


async def record_observations(conn: AsyncConnection, ctx: Context, principal: Principal, ratings: Sequence[Rating],
                              notes: dict[int, str] | None = None) -> list[ObservationRecorded]:
    """Record a request's ratings, all or none: one ObservationRecorded each, one append for all."""
    notes = notes or {}
    pupils = await _pupils_for(conn, principal, ratings)
    slots = await _assessment_slots(conn, ratings)
    versions = {s.framework_version for s in slots.values()} | {r.framework_version for r in ratings if r.framework_version}
    frameworks = await ctx.frameworks.get_many(conn, principal.trust_id, versions, for_use=True)
    events = decide_observations(ratings, frameworks, slots, ctx.clock())
    emission = Emission(ctx.store, principal.trust_id)
    for event in events:
        stream = assessment_stream(event.assessment_id) if event.assessment_id else pupil_stream(event.pupil_id)
        emission.add(stream, pupils[event.pupil_id].academy_id, event)
    new = await observation_recorded(conn, emission.in_order)
    if len(new) != len(events):
        corrected = next((r.corrects for r in ratings if r.corrects is not None), None)
        if corrected is not None:  # a concurrent correction of the same observation won
            raise AlreadyCorrected(corrected, await queries.correction_of(conn, corrected))
        raise DuplicateObservation([r.index for r in ratings if r.observation_id not in new])
    await ctx.personal.save_notes(conn, [
        Note(r.observation_id, r.pupil_id, principal.trust_id, pupils[r.pupil_id].academy_id, notes[r.index])
        for r in ratings if r.index in notes
    ])
    await emission.append(conn)  # projected above, before the notes
    return events


async def _pupils_for(conn: AsyncConnection, principal: Principal, ratings: Sequence[Rating]) -> dict[UUID, queries.PupilRow]:
    pupils = await queries.pupil_rows(conn, (r.pupil_id for r in ratings))
    for pupil in pupils.values():
        ensure_scope(principal, pupil.trust_id, pupil.academy_id)
    problems = [RatingProblem(r.index, f"no pupil {r.pupil_id} on the roster") for r in ratings if r.pupil_id not in pupils]
    problems += [RatingProblem(r.index, f"pupil {r.pupil_id} has left the academy")
                 for r in ratings if r.pupil_id in pupils and not pupils[r.pupil_id].on_roll and r.corrects is None]
    if problems:
        raise RatingsRejected(sorted(problems, key=lambda p: p.index))
    return pupils


async def _assessment_slots(conn: AsyncConnection, ratings: Sequence[Rating]) -> dict[UUID, AssessmentSlot]:
    # A share lock: a completion of these assessments waits for this request, and vice versa.
    rows = await queries.assessment_rows(conn, (r.assessment_id for r in ratings if r.assessment_id), lock="share")
    return {
        row.assessment_id: AssessmentSlot(row.assessment_id, row.pupil_id, row.framework_version, tuple(row.strands),
                                          row.completed_at is not None)
        for row in rows.values()
    }


async def correct_observation(conn: AsyncConnection, ctx: Context, principal: Principal, observation_id: UUID,
                              level: Any, note: str | None) -> ObservationRecorded:
    """A correction is a new observation that names the one it corrects; nothing is updated."""
    original = await queries.observation_row(conn, observation_id)
    if original is None:
        raise UnknownObservation(observation_id)
    ensure_scope(principal, original.trust_id, original.academy_id)
    already = await queries.correction_of(conn, observation_id)
    if already is not None:
        raise AlreadyCorrected(observation_id, already)
    rating = Rating(
        index=0, observation_id=uuid.uuid4(), pupil_id=original.pupil_id, statement_id=original.statement_id,
        level=level, observer_id=principal.subject, observed_at=original.observed_at,
        framework_version=original.framework_version, assessment_id=original.assessment_id,
        has_note=note is not None, corrects=observation_id,
    )
    (event,) = await record_observations(conn, ctx, principal, [rating], {0: note} if note is not None else None)
    return event


# --- Assessments and screenings -------------------------------------------------------------


@dataclass(frozen=True)
class StartRequest:
    strands: Sequence[str]
    framework_version: str
    pupil_id: UUID | None = None
    class_id: UUID | None = None
    group_id: UUID | None = None


@dataclass(frozen=True)
class Started:
    screening_id: UUID | None
    assessments: list[AssessmentStarted]


async def start_assessment(conn: AsyncConnection, ctx: Context, principal: Principal, request: StartRequest) -> Started:
    """An individual assessment, or a screening of a class or group: one assessment per pupil."""
    named = [x for x in (request.pupil_id, request.class_id, request.group_id) if x is not None]
    if len(named) != 1:
        raise InvalidAssessmentRequest("name exactly one of pupil_id, class_id or group_id")
    cohort = await _cohort(conn, principal, request)
    framework = await ctx.frameworks.get(conn, principal.trust_id, request.framework_version, for_use=True)
    strands = ordered_strands(framework, request.strands)
    screening_id = None if request.pupil_id else uuid.uuid4()
    now = ctx.clock()
    emission = Emission(ctx.store, principal.trust_id)
    started = []
    for pupil in cohort:
        event = AssessmentStarted(
            assessment_id=uuid.uuid4(), pupil_id=pupil.pupil_id, framework_version=framework.version, strands=strands,
            screening_id=screening_id, class_id=request.class_id, group_id=request.group_id,
            started_by=principal.subject, started_at=now,
        )
        emission.add(assessment_stream(event.assessment_id), pupil.academy_id, event)
        started.append(event)
    await emission.append(conn, dict.fromkeys(emission.by_stream, NO_STREAM))
    await project(conn, emission.in_order)
    return Started(screening_id, started)


async def _cohort(conn: AsyncConnection, principal: Principal, request: StartRequest) -> list[queries.PupilRow]:
    if request.pupil_id is not None:
        pupil = (await queries.pupil_rows(conn, [request.pupil_id])).get(request.pupil_id)
        if pupil is None:
            raise UnknownPupil([request.pupil_id])
        ensure_scope(principal, pupil.trust_id, pupil.academy_id)
        if not pupil.on_roll:
            raise PupilNotOnRoll(pupil.pupil_id)
        return [pupil]
    if request.class_id is not None:
        owner = await queries.class_row(conn, request.class_id)
        if owner is None:
            raise UnknownClass(request.class_id)
    else:
        assert request.group_id is not None
        owner = await queries.group_row(conn, request.group_id)
        if owner is None:
            raise UnknownGroup(request.group_id)
    ensure_scope(principal, owner.trust_id, owner.academy_id)
    cohort = await queries.pupils_in(conn, class_id=request.class_id, group_id=request.group_id)
    if not cohort:
        raise EmptyCohort()
    return cohort


async def complete_assessment(conn: AsyncConnection, ctx: Context, principal: Principal, assessment_id: UUID) -> list[Event]:
    """AssessmentCompleted and one StrandScored per strand; refused twice, or with a statement unrated."""
    rows = await queries.assessment_rows(conn, [assessment_id], lock="update")
    if assessment_id not in rows:
        raise UnknownAssessment(assessment_id)
    row = rows[assessment_id]
    ensure_scope(principal, row.trust_id, row.academy_id)
    return await _complete(conn, ctx, principal, [row])


async def complete_screening(conn: AsyncConnection, ctx: Context, principal: Principal, screening_id: UUID) -> list[Event]:
    """Complete every assessment of a screening still open: all of them, or none if any has a gap."""
    screening = await queries.screening_row(conn, screening_id)
    if screening is None:
        raise UnknownScreening(screening_id)
    ensure_scope(principal, screening.trust_id, screening.academy_id)
    rows = await queries.assessment_rows(conn, await queries.screening_assessment_ids(conn, screening_id), lock="update")
    open_rows = [row for row in rows.values() if row.completed_at is None]
    if not open_rows:
        raise AssessmentAlreadyCompleted(screening_id)
    return await _complete(conn, ctx, principal, open_rows)


async def _dates_of_birth(conn: AsyncConnection, ctx: Context, pupil_ids: list[UUID]) -> dict[UUID, date]:
    """The pupils' dates of birth, for the strand expected at their age; none where no keyring is
    configured (a bare context) or the pupil was erased."""
    if ctx.personal_data is None:
        return {}
    details = await ctx.personal_data.details(conn, pupil_ids)
    return {pupil_id: d.date_of_birth for pupil_id, d in details.items() if d.date_of_birth}


async def _complete(conn: AsyncConnection, ctx: Context, principal: Principal, rows: Sequence[Any]) -> list[Event]:
    now = ctx.clock()
    histories = await queries.histories(conn, [row.pupil_id for row in rows])
    frameworks = await ctx.frameworks.get_many(conn, principal.trust_id, {row.framework_version for row in rows})
    emission = Emission(ctx.store, principal.trust_id)
    expected: dict[str, int] = {}
    missing: dict[UUID | None, list[str]] = {}
    produced: list[Event] = []
    births = await _dates_of_birth(conn, ctx, [row.pupil_id for row in rows])
    for row in rows:
        stream = assessment_stream(row.assessment_id)
        assessment = Assessment.replay([e.envelope.data for e in await ctx.store.read_stream(conn, stream)])
        framework: Framework = frameworks[row.framework_version]
        born = births.get(row.pupil_id)
        expected_strand = framework.expected_strand(age_in_months(born, now.date())) if born else None
        try:
            events = assessment.complete(framework, histories[row.pupil_id], principal.subject, now, expected_strand)
        except MissingRatings as gaps:
            missing.update(gaps.missing)
            continue
        expected[stream] = assessment.version
        for event in events:
            emission.add(stream, row.academy_id, event)
        produced.extend(events)
    if missing:
        raise MissingRatings(missing)
    await emission.append(conn, expected)
    await project(conn, emission.in_order)
    return produced


# --- Frameworks -----------------------------------------------------------------------------


async def load_framework(conn: AsyncConnection, ctx: Context, principal: Principal, framework: Framework) -> LoadOutcome:
    """A platform admin loads for every trust; a trust admin loads the trust's licensed item bank."""
    owner = PLATFORM if principal.has_role(Role.admin) else principal.trust_id
    return await ctx.frameworks.load(conn, owner, framework, principal.subject)


async def load_sample_framework(conn: AsyncConnection, ctx: Context, framework: Framework) -> LoadOutcome:
    """At start-up: the sample framework, for every trust, unless this very version is there."""
    return await ctx.frameworks.load(conn, PLATFORM, framework, "flourish")
