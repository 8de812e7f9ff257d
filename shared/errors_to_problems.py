"""The kernel's errors as the problem+json the client gets, in one place: every service's table
(its own errors_to_problems.py) is added to this one, and a service's entry wins for the same type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import DBAPIError

from shared.datakeys import DataKeyDestroyed, DataKeyError
from shared.problems import (
    ConcurrencyConflict,
    Forbidden,
    Gone,
    PayloadTooLarge,
    Problem,
    ServiceUnavailable,
    UnprocessableEntity,
)
from shared.store.event_store import EventTooLarge, StreamVersionConflict
from shared.tenancy import is_policy_violation

ProblemFactory = Callable[[Exception], Problem]


def as_problem(problem: type[Problem], extras: Callable[[Any], dict[str, Any]] | None = None) -> ProblemFactory:
    """The usual entry of a service's table: the error's message as the detail, and `extras` (ids,
    never values a client sent) as extension members."""

    def factory(error: Exception) -> Problem:
        return problem(str(error), extras=extras(error) if extras else None)

    return factory

# PostgreSQL stores no NUL character in text or jsonb (SQLSTATE 22021 and 22P05): input that
# carries one is the client's error, whichever field it came in.
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


def _database_error_problem(error: Exception) -> Problem:
    """A database error that is the client's doing, as a problem; any other stays a 500."""
    if getattr(getattr(error, "orig", None), "sqlstate", None) in _UNSTORABLE_TEXT:
        return UnprocessableEntity("text may not contain NUL (\\u0000) characters; nothing was changed")
    if is_policy_violation(error):  # row-level security refused a row of another trust
        return Forbidden("this record is outside your trust or academies; nothing was changed")
    raise error  # any other database error stays a 500, logged by UnhandledErrorMiddleware


PROBLEMS: Mapping[type[Exception], ProblemFactory] = {
    StreamVersionConflict: lambda e: ConcurrencyConflict("the record changed since it was read; reload it and try again"),
    EventTooLarge: lambda e: PayloadTooLarge(str(e)),
    DBAPIError: _database_error_problem,
    # Per-pupil data keys (docs/consent.md): an erased pupil is gone; any other key failure fails
    # closed (nothing sealed, written or shown) and may be retried.
    DataKeyDestroyed: lambda e: Gone("the pupil was erased and their data key destroyed"),
    DataKeyError: lambda e: ServiceUnavailable("a pupil's data key is not available; try again later"),
}
