"""Each domain error of the planning service as the problem+json the client gets, in one place
(the kernel's own, shared.errors_to_problems, apply too)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.planning.domain import errors as e
from services.planning.framework_source import UnknownFramework
from shared.problems import Conflict, Forbidden, Gone, NotFound, Problem, UnprocessableEntity, problem_type


class ParticipationWithdrawnProblem(Forbidden):
    type_ = problem_type("participation-withdrawn")
    title = "Consent to take part was withdrawn"


class NothingToSuggest(NotFound):
    type_ = problem_type("no-suggestion")
    title = "Nothing to suggest yet"


class WrongState(Conflict):
    type_ = problem_type("wrong-plan-state")
    title = "The plan is not in a state that allows this"


def _as(problem: type[Problem]) -> Callable[[Exception], Problem]:
    def factory(error: Exception) -> Problem:
        return problem(str(error))

    return factory


PROBLEMS: Mapping[type[Exception], Callable[[Exception], Problem]] = {
    e.UnknownPupil: _as(NotFound),
    e.UnknownPlan: _as(NotFound),
    e.PupilErased: _as(Gone),
    e.ParticipationWithdrawn: _as(ParticipationWithdrawnProblem),
    e.NoSuggestion: _as(NothingToSuggest),
    e.WrongPlanState: _as(WrongState),
    e.InvalidTargets: lambda x: UnprocessableEntity(str(x), extras={"not_statements_of_strand": x.wrong}),  # type: ignore[attr-defined]
    e.InvalidActivities: _as(UnprocessableEntity),
    e.InvalidPlan: _as(UnprocessableEntity),
    e.InvalidSession: _as(UnprocessableEntity),
    UnknownFramework: _as(UnprocessableEntity),
}
