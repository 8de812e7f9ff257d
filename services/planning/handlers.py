"""One function per planning command: load, decide (domain), write rows and append events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import any_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.planning.domain import plans as rules
from services.planning.domain.errors import (
    NoSuggestion,
    ParticipationWithdrawn,
    PupilErased,
    UnknownPlan,
    UnknownPupil,
)
from services.planning.domain.plans import PlanContent, PlanStatus
from services.planning.domain.suggestions import Score, Suggestion, suggest_for_class, suggest_for_pupil
from services.planning.framework_source import FrameworkSource
from services.planning.notes import SessionNotes
from services.planning.tables import erased_pupils, participation, plans, pupils, sessions, strand_scores
from shared.auth import Principal, ensure_scope
from shared.events.envelope import Envelope
from shared.events.planning import PlanClosed, PlanIssued, PlanKind, PlanReviewed, SessionLogged
from shared.events.registry import Event
from shared.store.event_store import EventStore

SOURCE = "/flourish/planning"


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


async def _who_and_where(conn: AsyncConnection, principal: Principal, content: PlanContent,
                         academy_id: UUID | None) -> tuple[UUID, str]:
    """The plan's academy and framework version, from its pupils' (or class's) stored records."""
    if content.kind is PlanKind.CLASS:
        if academy_id is None:
            raise rules.InvalidPlan("a class plan names its academy (academy_id)")
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
        raise rules.InvalidPlan("every pupil of a plan belongs to one academy")
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
    rules.check_content(content, framework)
    plan_id = uuid4()
    await conn.execute(plans.insert().values(
        plan_id=plan_id, version=1, trust_id=principal.trust_id, academy_id=academy, framework_version=version,
        status=PlanStatus.DRAFT, created_by=principal.subject, created_at=deps.clock(), **_content_row(content)))
    return plan_id


def _ids(row: Any) -> list[UUID]:
    """The plan's pupils as plain UUIDs (asyncpg hands back its own UUID type inside arrays)."""
    return [UUID(str(p)) for p in row.pupil_ids]


def _content_row(content: PlanContent) -> dict[str, Any]:
    return {"kind": content.kind.value, "pupil_ids": content.pupil_ids, "class_id": content.class_id,
            "strand": content.strand, "targets": content.targets, "activities": content.activities,
            "sessions_per_week": content.sessions_per_week, "session_minutes": content.session_minutes,
            "setting": content.setting, "review_on": content.review_on}


async def _percents_now(conn: AsyncConnection, pupil_ids: list[UUID], strand: str) -> dict[str, float]:
    out = {}
    for pupil_id in pupil_ids:
        latest = await latest_at_strand(conn, pupil_id, strand)
        if latest is not None:
            out[str(pupil_id)] = latest.strand_percent
    return out


async def _append(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, academy_id: UUID, plan_id: UUID,
                  events: list[Event]) -> None:
    envelopes = [Envelope(data=e, trust_id=principal.trust_id, academy_id=academy_id, source=SOURCE) for e in events]
    await deps.store.append(conn, f"plan-{plan_id}", envelopes)


def _issued_events(row: Any, version: int, practitioner: str, at: datetime, supersedes: int | None) -> list[Event]:
    pupil_ids = _ids(row)
    common = dict(plan_id=row.plan_id, plan_version=version, kind=PlanKind(row.kind), strand=row.strand,
                  target_statements=list(row.targets), activities=list(row.activities),
                  frequency=f"{row.sessions_per_week} × {row.session_minutes} min a week, {row.setting}",
                  practitioner_id=practitioner, review_on=row.review_on, issued_at=at, pupil_ids=pupil_ids,
                  class_id=row.class_id, sessions_per_week=row.sessions_per_week,
                  session_minutes=row.session_minutes, supersedes_version=supersedes)
    # One event per pupil keeps each pupil's events in order on Kafka (keyed by pupil).
    return [PlanIssued(pupil_id=p, **common) for p in pupil_ids] or [PlanIssued(pupil_id=None, **common)]


async def issue_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID,
                     practitioner_id: str) -> int:
    row = await _plan_row(conn, plan_id, principal, lock=True)
    rules.check_can_issue(row.status)
    await ensure_may_take_part(conn, _ids(row))
    at = deps.clock()
    percents = await _percents_now(conn, _ids(row), row.strand)
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version).values(
        status=PlanStatus.ISSUED, practitioner_id=practitioner_id, issued_at=at, percents_at_issue=percents))
    await _append(conn, deps, principal, row.academy_id, plan_id, _issued_events(row, row.version, practitioner_id, at, None))
    return int(row.version)


async def revise_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID,
                      content: PlanContent, practitioner_id: str) -> int:
    """A change to an issued plan: a new issued version; the old one stays, superseded."""
    row = await _plan_row(conn, plan_id, principal, lock=True)
    rules.check_can_revise(row.status)
    if PlanKind(row.kind) is not content.kind or _ids(row) != content.pupil_ids or row.class_id != content.class_id:
        raise rules.InvalidPlan("a new version keeps the plan's kind and who it is for; start a new plan otherwise")
    await ensure_may_take_part(conn, content.pupil_ids)
    framework = await deps.frameworks.get(row.trust_id, row.framework_version)
    rules.check_content(content, framework)
    at = deps.clock()
    version = int(row.version) + 1
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version)
                       .values(status=PlanStatus.SUPERSEDED))
    await conn.execute(plans.insert().values(
        plan_id=plan_id, version=version, trust_id=row.trust_id, academy_id=row.academy_id,
        framework_version=row.framework_version, status=PlanStatus.ISSUED, created_by=principal.subject,
        created_at=at, practitioner_id=practitioner_id, issued_at=at,
        percents_at_issue=await _percents_now(conn, content.pupil_ids, content.strand), **_content_row(content)))
    new = (await conn.execute(select(plans).where(plans.c.plan_id == plan_id, plans.c.version == version))).one()
    await _append(conn, deps, principal, row.academy_id, plan_id, _issued_events(new, version, practitioner_id, at, int(row.version)))
    return version


async def review_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID) -> dict[str, Any]:
    row = await _plan_row(conn, plan_id, principal, lock=True)
    rules.check_can_review(row.status)
    at = deps.clock()
    at_issue = dict(row.percents_at_issue or {})
    outcomes: list[dict[str, Any]] = []
    events: list[Event] = []
    for pupil_id in _ids(row):
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
        events.append(PlanReviewed(
            plan_id=plan_id, plan_version=row.version, pupil_id=pupil_id, reviewed_by=principal.subject,
            reviewed_at=at, strand_percent_now=change.percent_now,
            change_since_previous_plan=change.since_previous_plan, change_since_baseline=change.since_baseline,
            need_percents_now=latest.need_percents if latest else {},
            assessment_id=latest.assessment_id if latest else None))
    if not events:
        events.append(PlanReviewed(plan_id=plan_id, plan_version=row.version, pupil_id=None,
                                   reviewed_by=principal.subject, reviewed_at=at))
    review = {"reviewed_by": principal.subject, "reviewed_at": at.isoformat(), "pupils": outcomes}
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version)
                       .values(status=PlanStatus.REVIEWED, review=review))
    await _append(conn, deps, principal, row.academy_id, plan_id, events)
    return review


async def close_plan(conn: AsyncConnection, deps: PlanningDeps, principal: Principal, plan_id: UUID) -> None:
    row = await _plan_row(conn, plan_id, principal, lock=True)
    rules.check_can_close(row.status)
    at = deps.clock()
    await conn.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.version == row.version)
                       .values(status=PlanStatus.CLOSED, closed_at=at))
    pupil_ids = _ids(row) or [None]
    await _append(conn, deps, principal, row.academy_id, plan_id, [
        PlanClosed(plan_id=plan_id, plan_version=row.version, pupil_id=p, closed_by=principal.subject, closed_at=at)
        for p in pupil_ids])


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
    row = await _plan_row(conn, plan_id, principal, lock=True)
    present = _ids(row) if session.pupils_present is None else session.pupils_present
    rules.check_session(row.status, session.held_on, deps.clock().date(), session.minutes, _ids(row), present)
    await ensure_may_take_part(conn, present)
    session_id = uuid4()
    await conn.execute(sessions.insert().values(
        session_id=session_id, plan_id=plan_id, plan_version=row.version, trust_id=row.trust_id,
        academy_id=row.academy_id, held_on=session.held_on, minutes=session.minutes, pupil_ids=present,
        staff_ids=session.staff_present, activities_done=session.activities_done, logged_by=principal.subject,
        logged_at=deps.clock()))
    if session.note:
        await deps.notes.put(conn, session_id, row.trust_id, row.academy_id, session.note)
    common = dict(session_id=session_id, plan_id=plan_id, held_on=session.held_on, minutes=session.minutes,
                  activities_done=session.activities_done, logged_by=principal.subject, has_note=bool(session.note))
    events: list[Event] = [SessionLogged(pupil_id=p, **common) for p in present] or [SessionLogged(pupil_id=None, **common)]
    await _append(conn, deps, principal, row.academy_id, plan_id, events)
    return session_id


async def session_totals(conn: AsyncConnection, condition: Any) -> dict[str, Any]:
    count, minutes = (await conn.execute(select(func.count(), func.coalesce(func.sum(sessions.c.minutes), 0))
                                         .where(condition))).one()
    return {"sessions": int(count), "minutes": int(minutes), "hours": rules.hours(int(minutes))}
