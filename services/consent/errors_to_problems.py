"""Each domain error of the consent service as the problem+json the client gets, in one place
(the kernel's own, shared.errors_to_problems, apply too: data keys, concurrency, database)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.consent.domain import errors as e
from shared.problems import Conflict, Gone, NotFound, Problem, UnprocessableEntity


def _as(problem: type[Problem]) -> Callable[[Exception], Problem]:
    def factory(error: Exception) -> Problem:
        return problem(str(error))

    return factory


PROBLEMS: Mapping[type[Exception], Callable[[Exception], Problem]] = {
    e.UnknownPupil: _as(NotFound),
    e.PupilAlreadyErased: _as(Gone),
    e.NothingToWithdraw: _as(Conflict),
    e.DecisionInFuture: _as(UnprocessableEntity),
    e.DecisionOutOfOrder: _as(UnprocessableEntity),
    e.InvalidValidity: _as(UnprocessableEntity),
    e.NotASharingPurpose: _as(UnprocessableEntity),
    e.InvalidRetentionPeriod: _as(UnprocessableEntity),
}
