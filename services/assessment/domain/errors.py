"""Domain errors, named after the rule they protect; app.py maps each to one problem+json.

Messages name ids, statement numbers, rows and columns, never personal data: they reach the
client, its logs and screenshots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID


class AssessmentError(Exception):
    """An assessment-service command broke a domain rule."""


# --- Framework ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameworkProblem:
    """One thing wrong with a framework document, located by strand, need, statement and field."""

    message: str
    strand: str | None = None
    need: str | None = None
    statement: int | None = None
    field: str | None = None

    def describe(self) -> str:
        where = []
        if self.strand is not None:
            where.append(f"strand {self.strand!r}")
        if self.need is not None:
            where.append(f"need {self.need!r}")
        if self.statement is not None:
            where.append(f"statement {self.statement}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def as_dict(self) -> dict[str, object]:
        return {
            "strand": self.strand, "need": self.need, "statement": self.statement,
            "field": self.field, "message": self.message,
        }


class FrameworkInvalid(AssessmentError):
    def __init__(self, problems: Sequence[FrameworkProblem]) -> None:
        self.problems = list(problems)
        first = self.problems[0].describe() if self.problems else "the framework is not valid"
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}")


class UnknownFrameworkVersion(AssessmentError):
    def __init__(self, version: str) -> None:
        super().__init__(f"no framework version {version!r} is loaded for this trust")
        self.version = version


class FrameworkVersionInUse(AssessmentError):
    """A version an assessment or observation has used is immutable."""

    def __init__(self, version: str) -> None:
        super().__init__(
            f"framework version {version!r} has been used by assessments and cannot change; "
            "load the new content under a new version"
        )
        self.version = version


class FrameworkVersionReserved(AssessmentError):
    """A trust may not shadow a platform-wide version with content of its own."""

    def __init__(self, version: str) -> None:
        super().__init__(f"framework version {version!r} is a platform framework; choose another version")
        self.version = version


class UnknownStrand(AssessmentError):
    def __init__(self, strand: str, version: str) -> None:
        super().__init__(f"framework {version!r} has no strand {strand!r}")


# --- Roster -----------------------------------------------------------------------------------


class UnknownAcademy(AssessmentError):
    def __init__(self, academy_id: UUID) -> None:
        super().__init__(f"academy {academy_id} is not registered; a trust admin registers it with PUT /academies/{academy_id}")


class AcademyOfAnotherTrust(AssessmentError):
    def __init__(self, academy_id: UUID) -> None:
        super().__init__(f"academy {academy_id} is registered to another trust")


class UnknownPupil(AssessmentError):
    def __init__(self, pupil_ids: Sequence[UUID]) -> None:
        shown = ", ".join(str(p) for p in list(pupil_ids)[:10])
        super().__init__(f"no pupil {shown} on the roster")
        self.pupil_ids = list(pupil_ids)


class PupilNotOnRoll(AssessmentError):
    def __init__(self, pupil_id: UUID) -> None:
        super().__init__(f"pupil {pupil_id} has left the academy")


class ProcessingOptedOut(AssessmentError):
    """The family opted out of processing by the online tool (consent's `online_processing`):
    nothing about the child is observed, assessed or scored until they grant it again."""

    def __init__(self, pupil_ids: Sequence[UUID]) -> None:
        super().__init__("the family opted out of processing by the online tool (online_processing refused): "
                         "no observation or assessment of the child is recorded")
        self.pupil_ids = list(pupil_ids)


class UnknownClass(AssessmentError):
    def __init__(self, class_id: UUID) -> None:
        super().__init__(f"no class {class_id}")


class UnknownGroup(AssessmentError):
    def __init__(self, group_id: UUID) -> None:
        super().__init__(f"no group {group_id}")


class EmptyCohort(AssessmentError):
    def __init__(self) -> None:
        super().__init__("the class or group has no pupils on roll to screen")


@dataclass(frozen=True)
class RowProblem:
    """What is wrong with one row (or, with row None, the whole file) of an MIS export."""

    row: int | None
    column: str | None
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"row": self.row, "column": self.column, "message": self.message}


class RosterFileRejected(AssessmentError):
    """The file is rejected whole: nothing of it was imported."""

    def __init__(self, problems: Sequence[RowProblem]) -> None:
        self.problems = list(problems)
        rows = {p.row for p in self.problems if p.row is not None}
        super().__init__(
            f"the roster file was rejected and nothing was imported: {len(self.problems)} problem(s)"
            + (f" in {len(rows)} row(s)" if rows else "")
        )


# --- Observations and assessments -------------------------------------------------------------


@dataclass(frozen=True)
class RatingProblem:
    """What is wrong with one rating of a request (its index in the request's list)."""

    index: int
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "message": self.message}


class RatingsRejected(AssessmentError):
    """One or more ratings break a rule; none of the request's ratings was recorded."""

    def __init__(self, problems: Sequence[RatingProblem]) -> None:
        self.problems = list(problems)
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"rating {first.index}: {first.message}{more}; nothing was recorded")


class DuplicateObservation(AssessmentError):
    """The same rating (pupil, statement, observer, moment) or observation id was recorded before."""

    def __init__(self, indexes: Sequence[int]) -> None:
        self.indexes = list(indexes)
        shown = ", ".join(str(i) for i in self.indexes[:20])
        super().__init__(f"already recorded: rating(s) {shown}; nothing was recorded")


class UnknownObservation(AssessmentError):
    def __init__(self, observation_id: UUID) -> None:
        super().__init__(f"no observation {observation_id}")


class AlreadyCorrected(AssessmentError):
    def __init__(self, observation_id: UUID, correction_id: UUID | None) -> None:
        by = f" by {correction_id}; correct that one" if correction_id else ""
        super().__init__(f"observation {observation_id} was already corrected{by}")


class UnknownAssessment(AssessmentError):
    def __init__(self, assessment_id: UUID) -> None:
        super().__init__(f"no assessment {assessment_id}")


class UnknownScreening(AssessmentError):
    def __init__(self, screening_id: UUID) -> None:
        super().__init__(f"no screening {screening_id}")


class AssessmentAlreadyCompleted(AssessmentError):
    def __init__(self, assessment_id: UUID) -> None:
        super().__init__(f"assessment {assessment_id} is already completed; its scores stand")
        self.assessment_id = assessment_id


class MissingRatings(AssessmentError):
    """Completing needs a rating of every statement of every strand assessed."""

    def __init__(self, missing: Mapping[UUID | None, Sequence[str]]) -> None:
        self.missing = {assessment: list(statements) for assessment, statements in missing.items()}
        count = sum(len(s) for s in self.missing.values())
        if len(self.missing) == 1:
            (statements,) = self.missing.values()
            shown = ", ".join(statements[:15]) + (" …" if len(statements) > 15 else "")
            detail = f"{count} statement(s) have no rating yet: {shown}"
        else:
            detail = f"{count} statement(s) over {len(self.missing)} assessments have no rating yet"
        super().__init__(f"cannot complete: {detail}")


class InvalidAssessmentRequest(AssessmentError):
    """A start request that names no pupil, class or group, or several, or no strands."""
