"""Each domain error of the consent service as the problem+json the client gets, in one place
(the kernel's own, shared.errors_to_problems, apply too: data keys, concurrency, database)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.consent.domain import errors as e
from shared.errors_to_problems import as_problem
from shared.problems import Conflict, Gone, NotFound, Problem, UnprocessableEntity

PROBLEMS: Mapping[type[Exception], Callable[[Exception], Problem]] = {
    e.UnknownPupil: as_problem(NotFound),
    e.PupilAlreadyErased: as_problem(Gone),
    e.NothingToWithdraw: as_problem(Conflict),
    e.DecisionInFuture: as_problem(UnprocessableEntity),
    e.DecisionOutOfOrder: as_problem(UnprocessableEntity),
    e.InvalidValidity: as_problem(UnprocessableEntity),
    e.NotASharingPurpose: as_problem(UnprocessableEntity),
    e.InvalidRetentionPeriod: as_problem(UnprocessableEntity),
    e.NoOptOut: as_problem(Conflict),
    e.OptOutGracePassed: as_problem(Conflict),
    e.OptOutAlreadyKept: as_problem(Conflict),
}
