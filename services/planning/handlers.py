"""One function per planning command: load the plan, decide (its `Plan` aggregate returns the
events), write rows and emit the events through the kernel's one emission path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import any_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning import opt_out
from services.planning.domain import plans as rules
from services.planning.domain.errors import (
    InvalidPlan,
    NoSuggestion,
    ParticipationWithdrawn,
    PupilErased,
    UnknownPlan,
    UnknownPupil,
)
from services.planning.domain.plans import Plan, PlanContent, PlanStatus, PupilReview, SessionHeld, plan_stream
from services.planning.domain.suggestions import Score, Suggestion, suggest_for_class, suggest_for_pupil
from services.planning.framework_source import FrameworkSource
from services.planning.notes import SessionNotes, open_texts, plan_field, seal_texts, session_field
from services.planning.tables import erased_pupils, participation, plans, pupils, sessions, strand_scores
from shared.auth import Principal, ensure_scope
from shared.events.planning import PlanKind
from shared.events.registry import Event
from shared.store.emission import emit
from shared.store.event_store import EventStore


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PlanningDeps:
    store: EventStore
    frameworks: FrameworkSource
    notes: SessionNotes
    clock: Callable[[], datetime] = utcnow


# --- Pupils, scores, suggestions ------------------------------------------------------------------


async def pupil_in_scope(conn: AsyncConnection, principal: Principal, pupil_id: UUID) -> Any:
    """The pupil's stored tenancy, checked against the caller (410 erased, 404 unknown, 403 elsewhere)."""
    row = (await conn.execute(select(pupils).where(pupils.c.pupil_id == pupil_id))).first()
    if row is None:
        erased = await conn.scalar(select(erased_pupils.c.trust_id).where(erased_pupils.c.pupil_id == pupil_id))
        if erased is not None and erased == principal.trust_id:
            raise PupilErased(pupil_id)
        raise UnknownPupil(pupil_id)
    ensure_scope(principal, row.trust_id, row.academy_id)
    return row


async def ensure_may_take_part(conn: AsyncConnection, pupil_ids: list[UUID]) -> None:
    if not pupil_ids:
        return
    await opt_out.ensure_processing_allowed(conn, pupil_ids)
    withdrawn = (await conn.execute(select(participation.c.pupil_id).where(
        participation.c.pupil_id.in_(pupil_ids), participation.c.withdrawn.is_(True)))).scalars().first()
    if withdrawn is not None:
        raise ParticipationWithdrawn(withdrawn)


def _score(row: Any) -> Score:
    return Score(row.assessment_id, row.pupil_id, row.framework_version, row.strand, dict(row.need_percents),
                 row.strand_percent, row.threshold_percent, row.working_at_strand, list(row.focus_statements),
                 row.baseline, row.scored_at)


async def latest_scores(conn: AsyncConnection, pupil_id: UUID) -> list[Score]:
    """The pupil's scores from their latest completed assessment, one per strand scored."""
    latest = (select(strand_scores.c.assessment_id).where(strand_scores.c.pupil_id == pupil_id)
              .order_by(strand_scores.c.scored_at.desc()).limit(1).scalar_subquery())
    rows = await conn.execute(select(strand_scores).where(strand_scores.c.assessment_id == latest))
    return [_score(r) for r in rows]


async def latest_at_strand(conn: AsyncConnection, pupil_id: UUID, strand: str) -> Score | None:
    row = (await conn.execute(select(strand_scores).where(strand_scores.c.pupil_id == pupil_id,
                                                          strand_scores.c.strand == strand)
                              .order_by(strand_scores.c.scored_at.desc()).limit(1))).first()
    return _score(row) if row else None


async def baseline_at_strand(conn: AsyncConnection, pupil_id: UUID, strand: str) -> Score | None:
    row = (await conn.execute(select(strand_scores).where(strand_scores.c.pupil_id == pupil_id,
                                                          strand_scores.c.strand == strand)
                              .order_by(strand_scores.c.baseline.desc(), strand_scores.c.scored_at).limit(1))).first()
    return _score(row) if row else None


async def pupil_suggestion(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, pupil_id: UUID) -> Suggestion:
    pupil = await pupil_in_scope(conn, principal, pupil_id)
    await opt_out.ensure_processing_allowed(conn, [pupil_id])
    scores = await latest_scores(conn, pupil_id)
    if not scores:
        raise NoSuggestion(f"pupil {pupil_id} has no completed assessment yet")
    working_at = scores[0].working_at_strand
    latest = next((s for s in scores if s.strand == working_at), None) or await latest_at_strand(conn, pupil_id, working_at)
    if latest is None:
        raise NoSuggestion(f"pupil {pupil_id} works at {working_at} but that strand has not been scored yet")
    issued = await conn.scalar(select(func.count(func.distinct(plans.c.plan_id))).where(
        any_(plans.c.pupil_ids) == pupil_id, plans.c.strand == working_at, plans.c.issued_at.is_not(None)))
    framework = await deps.frameworks.get(pupil.trust_id, latest.framework_version)
    return suggest_for_pupil(framework, latest, int(issued or 0))


async def class_suggestion(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, academy_id: UUID,
                           class_id: UUID) -> Suggestion:
    ensure_scope(principal, principal.trust_id, academy_id)
    members = list((await conn.execute(select(pupils.c.pupil_id).where(
        pupils.c.trust_id == principal.trust_id, pupils.c.academy_id == academy_id, pupils.c.class_id == class_id))).scalars())
    left_out = await opt_out.opted_out(conn, members)  # their family opted out of the online tool
    members = [m for m in members if m not in left_out]
    scores: list[Score] = []
    for pupil_id in members:
        latest = await latest_scores(conn, pupil_id)
        if latest:
            working = latest[0].working_at_strand
            scores.extend(s for s in latest if s.strand == working)
    if not scores:
        raise NoSuggestion(f"no pupil of class {class_id} has been scored yet")
    framework = await deps.frameworks.get(principal.trust_id, scores[0].framework_version)
    return suggest_for_class(framework, scores)


# --- Plans ----------------------------------------------------------------------------------------


async def _plan_row(conn: AsyncConnection, plan_id: UUID, principal: Principal, *, lock: bool = False) -> Any:
    query = select(plans).where(plans.c.plan_id == plan_id).order_by(plans.c.version.desc()).limit(1)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    if row is None or row.trust_id != principal.trust_id:
        raise UnknownPlan(plan_id)
    ensure_scope(principal, row.trust_id, row.academy_id)
    return row


async def current_plan(conn: AsyncConnection, principal: Principal, plan_id: UUID) -> Any:
    return await _plan_row(conn, plan_id, principal)


async def _load(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID) -> tuple[Any, Plan]:
    """The plan's current row, locked for the command, and the aggregate that decides on it."""
    row = await _plan_row(conn, plan_id, principal, lock=True)
    version = await deps.store.stream_version(conn, plan_stream(plan_id))
    activities = await open_texts(deps.notes.keyring, row.trust_id, row.activities, plan_field(row.plan_id, row.version))
    return row, Plan(row.plan_id, int(row.version), PlanStatus(row.status), _content(row, activities), version)


def _content(row: Any, activities: list[str]) -> PlanContent:
    return PlanContent(kind=PlanKind(row.kind), pupil_ids=_ids(row), class_id=row.class_id, strand=row.strand,
                       targets=list(row.targets), activities=activities,
                       sessions_per_week=row.sessions_per_week, session_minutes=row.session_minutes,
                       setting=row.setting, review_on=row.review_on)


async def _emit(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, academy_id: UUID, plan: Plan,
                events: Sequence[Event]) -> None:
    await emit(conn, deps.store, plan_stream(plan.plan_id), events, trust_id=principal.trust_id,
               academy_id=academy_id, expected_version=plan.version)


async def _who_and_where(conn: AsyncConnection, principal: Principal, content: PlanContent,
                         academy_id: UUID | None) -> tuple[UUID, str]:
    """The plan's academy and framework version, from its pupils' (or class's) stored records."""
    if content.kind is PlanKind.CLASS:
        if academy_id is None:
            raise InvalidPlan("a class plan names its academy (academy_id)")
        ensure_scope(principal, principal.trust_id, academy_id)
        version = await conn.scalar(select(strand_scores.c.framework_version).join(
            pupils, pupils.c.pupil_id == strand_scores.c.pupil_id).where(
            pupils.c.class_id == content.class_id, pupils.c.academy_id == academy_id).limit(1))
        if version is None:
            raise NoSuggestion(f"no pupil of class {content.class_id} has been scored yet")
        return academy_id, version
    academies = set()
    for pupil_id in content.pupil_ids:
        academies.add((await pupil_in_scope(conn, principal, pupil_id)).academy_id)
    if len(academies) != 1:
        raise InvalidPlan("every pupil of a plan belongs to one academy")
    await ensure_may_take_part(conn, content.pupil_ids)
    version = await conn.scalar(select(strand_scores.c.framework_version).where(
        strand_scores.c.pupil_id.in_(content.pupil_ids)).order_by(strand_scores.c.scored_at.desc()).limit(1))
    if version is None:
        raise NoSuggestion("the plan's pupils have no scores yet")
    return academies.pop(), version


async def draft_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, content: PlanContent,
                     academy_id: UUID | None) -> UUID:
    academy, version = await _who_and_where(conn, principal, content, academy_id)
    framework = await deps.frameworks.get(principal.trust_id, version)
    plan = Plan.draft(uuid4(), content, framework)
    await conn.execute(plans.insert().values(
        plan_id=plan.plan_id, version=plan.plan_version, trust_id=principal.trust_id, academy_id=academy,
        framework_version=version, status=PlanStatus.DRAFT, created_by=principal.subject, created_at=deps.clock(),
        **await _content_row(deps, principal.trust_id, plan.plan_id, plan.plan_version, content)))
    return plan.plan_id


def _ids(row: Any) -> list[UUID]:
    """The plan's pupils as plain UUIDs (asyncpg hands back its own UUID type inside arrays)."""
    return [UUID(str(p)) for p in row.pupil_ids]


async def _content_row(deps: PlanningDeps, trust_id: UUID, plan_id: UUID, version: int,
                       content: PlanContent) -> dict[str, Any]:
    """The plan's columns; its activities sealed under each of its children's keys."""
    activities = await seal_texts(deps.notes.keyring, trust_id, content.pupil_ids, content.activities,
                                  plan_field(plan_id, version))
    return {"kind": content.kind.value, "pupil_ids": content.pupil_ids, "class_id": content.class_id,
            "strand": content.strand, "targets": content.targets, "activities": activities,
            "sessions_per_week": content.sessions_per_week, "session_minutes": content.session_minutes,
            "setting": content.setting, "review_on": content.review_on}


async def _percents_now(conn: AsyncConnection, pupil_ids: list[UUID], strand: str) -> dict[str, float]:
    out = {}
    for pupil_id in pupil_ids:
        latest = await latest_at_strand(conn, pupil_id, strand)
        if latest is not None:
            out[str(pupil_id)] = latest.strand_percent
    return out


async def issue_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID,
                     practitioner_id: str) -> int:
    row, plan = await _load(conn, deps, principal, plan_id)
    at = deps.clock()
    events = plan.issue(practitioner_id, at)
    await ensure_may_take_part(conn, plan.content.pupil_ids)
    percents = await _percents_now(conn, plan.content.pupil_ids, plan.content.strand)
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version).values(
        status=PlanStatus.ISSUED, practitioner_id=practitioner_id, issued_at=at, percents_at_issue=percents))
    await _emit(conn, deps, principal, row.academy_id, plan, events)
    return plan.plan_version


async def revise_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID,
                      content: PlanContent, practitioner_id: str) -> int:
    """A change to an issued plan: a new issued version; the old one stays, superseded."""
    row, plan = await _load(conn, deps, principal, plan_id)
    framework = await deps.frameworks.get(row.trust_id, row.framework_version)
    at = deps.clock()
    events = plan.revise(content, framework, practitioner_id, at)
    await ensure_may_take_part(conn, content.pupil_ids)
    version = plan.plan_version + 1
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version)
                       .values(status=PlanStatus.SUPERSEDED))
    await conn.execute(plans.insert().values(
        plan_id=plan_id, version=version, trust_id=row.trust_id, academy_id=row.academy_id,
        framework_version=row.framework_version, status=PlanStatus.ISSUED, created_by=principal.subject,
        created_at=at, practitioner_id=practitioner_id, issued_at=at,
        percents_at_issue=await _percents_now(conn, content.pupil_ids, content.strand),
        **await _content_row(deps, row.trust_id, plan_id, version, content)))
    await _emit(conn, deps, principal, row.academy_id, plan, events)
    return version


async def review_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID) -> dict[str, Any]:
    row, plan = await _load(conn, deps, principal, plan_id)
    rules.check_can_review(plan.status)  # before reading every pupil's scores
    at = deps.clock()
    at_issue = dict(row.percents_at_issue or {})
    outcomes: list[dict[str, Any]] = []
    reviews: list[PupilReview] = []
    for pupil_id in plan.content.pupil_ids:
        latest = await latest_at_strand(conn, pupil_id, row.strand)
        baseline = await baseline_at_strand(conn, pupil_id, row.strand)
        change = rules.progress(latest.strand_percent if latest else None, at_issue.get(str(pupil_id)),
                                baseline.strand_percent if baseline else None)
        outcomes.append({
            "pupil_id": str(pupil_id), "assessment_id": str(latest.assessment_id) if latest else None,
            "strand_percent_now": change.percent_now, "need_percents_now": latest.need_percents if latest else {},
            "strand_percent_at_issue": at_issue.get(str(pupil_id)),
            "change_since_previous_plan": change.since_previous_plan,
            "baseline_percent": baseline.strand_percent if baseline else None,
            "change_since_baseline": change.since_baseline,
            "working_at_strand": latest.working_at_strand if latest else None,
        })
        reviews.append(PupilReview(pupil_id, change, latest.need_percents if latest else {},
                                   latest.assessment_id if latest else None))
    events = plan.review(reviews, principal.subject, at)
    review = {"reviewed_by": principal.subject, "reviewed_at": at.isoformat(), "pupils": outcomes}
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version)
                       .values(status=PlanStatus.REVIEWED, review=review))
    await _emit(conn, deps, principal, row.academy_id, plan, events)
    return review


async def close_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID) -> None:
    row, plan = await _load(conn, deps, principal, plan_id)
    at = deps.clock()
    events = plan.close(principal.subject, at)
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version)
                       .values(status=PlanStatus.CLOSED, closed_at=at))
    await _emit(conn, deps, principal, row.academy_id, plan, events)


# --- Sessions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionIn:
    held_on: date
    minutes: int
    pupils_present: list[UUID] | None
    staff_present: list[str]
    activities_done: list[str]
    note: str | None


async def log_session(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID,
                      session: SessionIn) -> UUID:
    row, plan = await _load(conn, deps, principal, plan_id)
    present = plan.content.pupil_ids if session.pupils_present is None else session.pupils_present
    session_id = uuid4()
    events = plan.log_session(SessionHeld(session_id, session.held_on, session.minutes, present,
                                          session.activities_done, principal.subject, bool(session.note)),
                              deps.clock().date())
    await ensure_may_take_part(conn, present)
    await conn.execute(sessions.insert().values(
        session_id=session_id, plan_id=plan_id, plan_version=row.version, trust_id=row.trust_id,
        academy_id=row.academy_id, held_on=session.held_on, minutes=session.minutes, pupil_ids=present,
        staff_ids=session.staff_present, logged_by=principal.subject,
        activities_done=await seal_texts(deps.notes.keyring, row.trust_id, present, session.activities_done,
                                         session_field(session_id)),
        logged_at=deps.clock()))
    if session.note:
        await deps.notes.put(conn, session_id, row.trust_id, row.academy_id, present, session.note)
    await _emit(conn, deps, principal, row.academy_id, plan, events)
    return session_id


async def session_totals(conn: AsyncConnection, condition: Any) -> dict[str, Any]:
    count, minutes = (await conn.execute(select(func.count(), func.coalesce(func.sum(sessions.c.minutes), 0))
                                         .where(condition))).one()
    return {"sessions": int(count), "minutes": int(minutes), "hours": rules.hours(int(minutes))}
