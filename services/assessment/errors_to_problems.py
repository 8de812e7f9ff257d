"""Each domain error of the assessment service as the problem+json the client gets, in one place
(the kernel's own, shared.errors_to_problems, apply too: data keys, concurrency, database).

Details name ids, statement ids, rows, columns and rating indexes: never a value from a roster
file or a note, which may be personal data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.assessment.domain import errors as e
from shared.errors_to_problems import as_problem
from shared.problems import Conflict, Forbidden, NotFound, OnlineProcessingRefused, Problem, UnprocessableEntity

PROBLEMS: Mapping[type[Exception], Callable[[Exception], Problem]] = {
    e.FrameworkInvalid: as_problem(UnprocessableEntity, lambda x: {"problems": [p.as_dict() for p in x.problems[:100]]}),
    e.UnknownFrameworkVersion: as_problem(UnprocessableEntity, lambda x: {"framework_version": x.version}),
    e.FrameworkVersionInUse: as_problem(Conflict, lambda x: {"framework_version": x.version}),
    e.FrameworkVersionReserved: as_problem(Conflict, lambda x: {"framework_version": x.version}),
    e.UnknownStrand: as_problem(UnprocessableEntity),
    e.UnknownAcademy: as_problem(NotFound),
    e.AcademyOfAnotherTrust: as_problem(Forbidden),
    e.UnknownPupil: as_problem(NotFound, lambda x: {"pupil_ids": [str(p) for p in x.pupil_ids[:50]]}),
    e.PupilNotOnRoll: as_problem(UnprocessableEntity),
    e.UnknownClass: as_problem(NotFound),
    e.UnknownGroup: as_problem(NotFound),
    e.EmptyCohort: as_problem(UnprocessableEntity),
    e.RosterFileRejected: as_problem(UnprocessableEntity, lambda x: {"problems": [p.as_dict() for p in x.problems]}),
    e.RatingsRejected: as_problem(UnprocessableEntity, lambda x: {"problems": [p.as_dict() for p in x.problems[:500]]}),
    e.DuplicateObservation: as_problem(Conflict, lambda x: {"duplicate_ratings": x.indexes[:500]}),
    e.UnknownObservation: as_problem(NotFound),
    e.AlreadyCorrected: as_problem(Conflict),
    e.UnknownAssessment: as_problem(NotFound),
    e.UnknownScreening: as_problem(NotFound),
    e.AssessmentAlreadyCompleted: as_problem(Conflict),
    e.MissingRatings: as_problem(
        UnprocessableEntity, lambda x: {"missing_statements": {str(k): v for k, v in x.missing.items()}}
    ),
    e.InvalidAssessmentRequest: as_problem(UnprocessableEntity),
    e.ProcessingOptedOut: as_problem(OnlineProcessingRefused, lambda x: {
        "reason": "online_processing_refused", "pupil_ids": [str(p) for p in x.pupil_ids[:50]]}),
}
