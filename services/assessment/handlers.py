"""One function per command: load what the decision needs, decide (domain/), append the events
and project them, all in the caller's transaction, so a command happens whole or not at all.

Scope is checked against the trust and academy the records are stored under, never against ids
a request sent. The roster's commands (registration, the MIS import, groups) are in
roster_handlers.py; frameworks, observations and assessments are here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment import opt_out, queries
from services.assessment.domain.assessment import Assessment, assessment_stream, ordered_strands
from services.assessment.domain.errors import (
    AlreadyCorrected,
    AssessmentAlreadyCompleted,
    DuplicateObservation,
    EmptyCohort,
    InvalidAssessmentRequest,
    MissingRatings,
    PupilNotOnRoll,
    RatingProblem,
    RatingsRejected,
    UnknownAssessment,
    UnknownClass,
    UnknownGroup,
    UnknownObservation,
    UnknownPupil,
    UnknownScreening,
)
from services.assessment.domain.framework import Framework
from services.assessment.domain.observations import AssessmentSlot, Rating, decide_observations, pupil_stream
from services.assessment.domain.screening import age_in_months
from services.assessment.framework_store import PLATFORM, FrameworkStore, LoadOutcome
from services.assessment.personal_data import Note, PersonalDataRepository
from services.assessment.projections import observation_recorded, project
from shared.auth import Principal, Role, ensure_scope
from shared.events.assessment import (
    AssessmentStarted,
    ObservationRecorded,
)
from shared.events.registry import Event
from shared.store.emission import Emission
from shared.store.event_store import NO_STREAM, EventStore


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


# --- Observations -------------------------------------------------------------------------------


async def record_observations(conn: AsyncConnection, ctx: Context, principal: Principal, ratings: Sequence[Rating],
                              notes: dict[int, str] | None = None) -> list[ObservationRecorded]:
    """Record a request's ratings, all or none: one ObservationRecorded each, one append for all."""
    notes = notes or {}
    pupils = await _pupils_for(conn, principal, ratings)  # their rows locked (KEY SHARE) as they are read
    # The pupils' streams appended to below are locked along with the opt-out check: one round
    # trip. Not an assessment's stream: its row is share-locked first (_assessment_slots), as a
    # completion locks the row before the stream; taking them the other way round could deadlock.
    streams = sorted({pupil_stream(r.pupil_id) for r in ratings}) if not any(r.assessment_id for r in ratings) else []
    await opt_out.ensure_processing_allowed(conn, pupils, locked=True, streams=(ctx.store, streams) if streams else None)
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
    await emission.append(conn, locked=streams)  # projected above, before the notes
    return events


async def _pupils_for(conn: AsyncConnection, principal: Principal, ratings: Sequence[Rating]) -> dict[UUID, queries.PupilRow]:
    pupils = await queries.pupil_rows(conn, (r.pupil_id for r in ratings), key_share=True)
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
    # Children of the class or group left out of a screening: their family opted out.
    left_out: list[UUID] = field(default_factory=list)


async def start_assessment(conn: AsyncConnection, ctx: Context, principal: Principal, request: StartRequest) -> Started:
    """An individual assessment, or a screening of a class or group: one assessment per pupil."""
    named = [x for x in (request.pupil_id, request.class_id, request.group_id) if x is not None]
    if len(named) != 1:
        raise InvalidAssessmentRequest("name exactly one of pupil_id, class_id or group_id")
    cohort = await _cohort(conn, principal, request)
    if request.pupil_id is not None:
        await opt_out.ensure_processing_allowed(conn, [request.pupil_id])
    left_out = await opt_out.opted_out(conn, [p.pupil_id for p in cohort])
    cohort = [p for p in cohort if p.pupil_id not in left_out]
    if not cohort:
        raise EmptyCohort()
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
    return Started(screening_id, started, sorted(left_out))


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
    await opt_out.ensure_processing_allowed(conn, [row.pupil_id])
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
    # A child whose family opted out since the screening began is left out of its completion.
    left_out = await opt_out.opted_out(conn, [row.pupil_id for row in open_rows])
    open_rows = [row for row in open_rows if row.pupil_id not in left_out]
    if not open_rows:
        raise opt_out.ProcessingOptedOut(sorted(left_out))
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
