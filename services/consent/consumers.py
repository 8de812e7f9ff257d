"""What the consent service consumes: the roster from the assessment context (PupilEnrolled,
PupilLeft) and every event about a pupil from assessment and planning, which moves the pupil's
last-activity date (a date retention can be counted from). Each event is applied once (inbox)."""

from __future__ import annotations

from services.consent import projections
from services.consent.tables import pupils
from shared.events.assessment import (
    AssessmentCompleted,
    ObservationRecorded,
    PupilEnrolled,
    PupilLeft,
    StrandScored,
)
from shared.events.planning import PlanIssued, PlanReviewed, SessionLogged
from shared.service import ConsumerSpec

ROSTER = ConsumerSpec(
    name="roster",
    contexts=["assessment", "planning"],
    handlers={
        PupilEnrolled: projections.on_pupil_enrolled,
        PupilLeft: projections.on_pupil_left,
        ObservationRecorded: projections.on_pupil_activity,
        AssessmentCompleted: projections.on_pupil_activity,
        StrandScored: projections.on_pupil_activity,
        PlanIssued: projections.on_pupil_activity,
        PlanReviewed: projections.on_pupil_activity,
        SessionLogged: projections.on_pupil_activity,
    },
    roster=pupils,
)
