"""Each domain error of the assessment service as the problem+json the client gets, in one place
(the kernel's own, shared.errors_to_problems, apply too: data keys, concurrency, database).

Details name ids, statement ids, rows, columns and rating indexes: never a value from a roster
file or a note, which may be personal data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from services.assessment.domain import errors as e
from shared.problems import Conflict, Forbidden, NotFound, Problem, UnprocessableEntity


def _as(problem: type[Problem], extras: Callable[[Any], dict[str, Any]] | None = None) -> Callable[[Exception], Problem]:
    def factory(error: Exception) -> Problem:
        return problem(str(error), extras=extras(error) if extras else None)

    return factory


PROBLEMS: Mapping[type[Exception], Callable[[Exception], Problem]] = {
    e.FrameworkInvalid: _as(UnprocessableEntity, lambda x: {"problems": [p.as_dict() for p in x.problems[:100]]}),
    e.UnknownFrameworkVersion: _as(UnprocessableEntity, lambda x: {"framework_version": x.version}),
    e.FrameworkVersionInUse: _as(Conflict, lambda x: {"framework_version": x.version}),
    e.FrameworkVersionReserved: _as(Conflict, lambda x: {"framework_version": x.version}),
    e.UnknownStrand: _as(UnprocessableEntity),
    e.UnknownAcademy: _as(NotFound),
    e.AcademyOfAnotherTrust: _as(Forbidden),
    e.UnknownPupil: _as(NotFound, lambda x: {"pupil_ids": [str(p) for p in x.pupil_ids[:50]]}),
    e.PupilNotOnRoll: _as(UnprocessableEntity),
    e.UnknownClass: _as(NotFound),
    e.UnknownGroup: _as(NotFound),
    e.EmptyCohort: _as(UnprocessableEntity),
    e.RosterFileRejected: _as(UnprocessableEntity, lambda x: {"problems": [p.as_dict() for p in x.problems]}),
    e.RatingsRejected: _as(UnprocessableEntity, lambda x: {"problems": [p.as_dict() for p in x.problems[:500]]}),
    e.DuplicateObservation: _as(Conflict, lambda x: {"duplicate_ratings": x.indexes[:500]}),
    e.UnknownObservation: _as(NotFound),
    e.AlreadyCorrected: _as(Conflict),
    e.UnknownAssessment: _as(NotFound),
    e.UnknownScreening: _as(NotFound),
    e.AssessmentAlreadyCompleted: _as(Conflict),
    e.MissingRatings: _as(UnprocessableEntity, lambda x: {"missing_statements": {str(k): v for k, v in x.missing.items()}}),
    e.InvalidAssessmentRequest: _as(UnprocessableEntity),
}
