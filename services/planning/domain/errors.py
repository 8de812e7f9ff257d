"""The planning domain's errors; the API maps each to a problem+json in one place (app.py)."""

from __future__ import annotations

from uuid import UUID


class PlanningError(Exception):
    """A domain rule refused the command; the message names ids and rules, never personal data."""


class UnknownPupil(PlanningError):
    def __init__(self, pupil_id: UUID) -> None:
        super().__init__(f"pupil {pupil_id} has no scores in the planning service yet")


class UnknownPlan(PlanningError):
    def __init__(self, plan_id: UUID) -> None:
        super().__init__(f"no action plan {plan_id}")


class PupilErased(PlanningError):
    def __init__(self, pupil_id: UUID) -> None:
        super().__init__(f"pupil {pupil_id} was erased: their planning data no longer exists")


class ParticipationWithdrawn(PlanningError):
    def __init__(self, pupil_id: UUID) -> None:
        super().__init__(
            f"consent for pupil {pupil_id} to take part in interventions was withdrawn: "
            "no new plan or session may be recorded for them"
        )


class ProcessingOptedOut(PlanningError):
    def __init__(self, pupil_ids: list[UUID]) -> None:
        super().__init__("the family opted out of processing by the online tool (online_processing refused): "
                         "no new plan, session or suggestion is made for the child")
        self.pupil_ids = pupil_ids


class NoSuggestion(PlanningError):
    """Nothing to suggest yet (no scores) or nothing left to work on (every strand met)."""


class InvalidTargets(PlanningError):
    def __init__(self, strand: str, wrong: list[str]) -> None:
        super().__init__(f"targets must be statements of the plan's strand {strand!r}; these are not: {', '.join(wrong)}")
        self.wrong = wrong


class InvalidActivities(PlanningError):
    pass


class InvalidPlan(PlanningError):
    """A plan that breaks a rule of its kind (who it is for, its frequency, its dates)."""


class WrongPlanState(PlanningError):
    """The command does not fit the plan's state (a review before issue, a session for a closed plan)."""


class InvalidSession(PlanningError):
    pass
