"""The planning service: suggested targets and activities, action plans issued by practitioners,
reviews and the session log. Publishes PlanIssued, PlanReviewed, SessionLogged and PlanClosed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.planning.api import router
from services.planning.consumers import CONSENT, SCORES
from services.planning.domain import errors
from services.planning.framework_source import AssessmentFrameworks, CachedFrameworks, FrameworkSource, UnknownFramework
from services.planning.handlers import PlanningDeps, utcnow
from services.planning.notes import SessionNotes
from services.planning.tables import kernel, metadata
from shared.peers import ServiceTokens
from shared.problems import Conflict, Forbidden, Gone, NotFound, Problem, UnprocessableEntity, problem_type
from shared.service import ServiceSpec, create_app
from shared.settings import Settings


class ParticipationWithdrawnProblem(Forbidden):
    type_ = problem_type("participation-withdrawn")
    title = "Consent to take part was withdrawn"


class NothingToSuggest(NotFound):
    type_ = problem_type("no-suggestion")
    title = "Nothing to suggest yet"


class WrongState(Conflict):
    type_ = problem_type("wrong-plan-state")
    title = "The plan is not in a state that allows this"


def _unprocessable(error: Exception) -> Problem:
    return UnprocessableEntity(str(error))


DOMAIN_ERRORS: dict[type[Exception], Callable[[Exception], Problem]] = {
    errors.UnknownPupil: lambda e: NotFound(str(e)),
    errors.UnknownPlan: lambda e: NotFound(str(e)),
    errors.PupilErased: lambda e: Gone(str(e)),
    errors.ParticipationWithdrawn: lambda e: ParticipationWithdrawnProblem(str(e)),
    errors.NoSuggestion: lambda e: NothingToSuggest(str(e)),
    errors.WrongPlanState: lambda e: WrongState(str(e)),
    errors.InvalidTargets: lambda e: UnprocessableEntity(str(e), extras={"not_statements_of_strand": e.wrong}),  # type: ignore[attr-defined]
    errors.InvalidActivities: _unprocessable,
    errors.InvalidPlan: _unprocessable,
    errors.InvalidSession: _unprocessable,
    UnknownFramework: _unprocessable,
}

SPEC = ServiceSpec(
    name="planning",
    metadata=metadata,
    tables=kernel,
    migrations=Path(__file__).parent / "migrations",
    description="Suggested targets and activities, action plans issued by practitioners, reviews and the session "
                "log: publishes PlanIssued, PlanReviewed, SessionLogged and PlanClosed.",
    routers=[router],
    consumers=[SCORES, CONSENT],
    domain_errors=DOMAIN_ERRORS,
)


def build_app(
    settings: Settings | None = None,
    *,
    frameworks: FrameworkSource | None = None,
    assessment_http: httpx.AsyncClient | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The planning service. Framework content comes from the assessment service over HTTP
    (`assessment_http`: a client for it, e.g. on an in-process ASGI transport in tests)."""
    settings = settings or Settings()
    app = create_app(SPEC, settings)
    runtime = app.state.runtime
    if frameworks is None:
        fetch = AssessmentFrameworks(settings.assessment_url, ServiceTokens(settings, "planning"), assessment_http)
        frameworks = CachedFrameworks(runtime.engine, fetch)
    app.state.planning = PlanningDeps(store=runtime.store, frameworks=frameworks, notes=SessionNotes(), clock=clock)
    return app


def create(settings: Settings | None = None) -> FastAPI:
    return build_app(settings)


def app() -> FastAPI:
    """uvicorn's factory: `uvicorn --factory services.planning.app:app`."""
    return build_app()
