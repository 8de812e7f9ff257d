"""Each domain error of the planning service as the problem+json the client gets, in one place
(the kernel's own, shared.errors_to_problems, apply too)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.planning.domain import errors as e
from services.planning.framework_source import UnknownFramework
from shared.errors_to_problems import as_problem
from shared.problems import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    OnlineProcessingRefused,
    Problem,
    UnprocessableEntity,
    problem_type,
)


class ParticipationWithdrawnProblem(Forbidden):
    type_ = problem_type("participation-withdrawn")
    title = "Consent to take part was withdrawn"



class NothingToSuggest(NotFound):
    type_ = problem_type("no-suggestion")
    title = "Nothing to suggest yet"


class WrongState(Conflict):
    type_ = problem_type("wrong-plan-state")
    title = "The plan is not in a state that allows this"


PROBLEMS: Mapping[type[Exception], Callable[[Exception], Problem]] = {
    e.UnknownPupil: as_problem(NotFound),
    e.UnknownPlan: as_problem(NotFound),
    e.PupilErased: as_problem(Gone),
    e.ParticipationWithdrawn: as_problem(ParticipationWithdrawnProblem),
    e.ProcessingOptedOut: as_problem(OnlineProcessingRefused, lambda x: {
        "reason": "online_processing_refused", "pupil_ids": [str(p) for p in x.pupil_ids[:50]]}),
    e.NoSuggestion: as_problem(NothingToSuggest),
    e.WrongPlanState: as_problem(WrongState),
    e.InvalidTargets: as_problem(UnprocessableEntity, lambda x: {"not_statements_of_strand": x.wrong}),
    e.InvalidActivities: as_problem(UnprocessableEntity),
    e.InvalidPlan: as_problem(UnprocessableEntity),
    e.InvalidSession: as_problem(UnprocessableEntity),
    UnknownFramework: as_problem(UnprocessableEntity),
}
