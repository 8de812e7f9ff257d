"""Events the consent service publishes: consent decisions, retention and erasure."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from shared.events.registry import Event, register

CONTEXT = "consent"


class Purpose(StrEnum):
    """What a consent decision covers. Taking part and processing are opt-out (the letter to
    parents promises it); every agency category is opt-in and explicit."""

    INTERVENTIONS = "interventions"
    ONLINE_PROCESSING = "online_processing"
    SHARE_SPEECH_AND_LANGUAGE = "share_speech_and_language"
    SHARE_CAMHS = "share_camhs"
    SHARE_SOCIAL_CARE = "share_social_care"
    SHARE_EDUCATIONAL_PSYCHOLOGY = "share_educational_psychology"
    SHARE_LOCAL_AUTHORITY = "share_local_authority"
    SHARE_OTHER = "share_other"


@register("flourish.consent.ConsentGranted.v1", CONTEXT)
class ConsentGranted(Event):
    consent_id: UUID
    pupil_id: UUID
    purpose: Purpose
    recorded_by: str
    decided_at: datetime
    valid_until: datetime | None = None


@register("flourish.consent.ConsentRefused.v1", CONTEXT)
class ConsentRefused(Event):
    consent_id: UUID
    pupil_id: UUID
    purpose: Purpose
    recorded_by: str
    decided_at: datetime


@register("flourish.consent.ConsentWithdrawn.v1", CONTEXT)
class ConsentWithdrawn(Event):
    """Withdrawal can come at any time; agencies that already received data are told."""

    consent_id: UUID
    pupil_id: UUID
    purpose: Purpose
    recorded_by: str
    withdrawn_at: datetime


@register("flourish.consent.RetentionExpired.v1", CONTEXT)
class RetentionExpired(Event):
    """A retention period ended: every service erases or crypto-shreds what it holds."""

    pupil_id: UUID
    data_category: str
    policy_id: UUID
    expired_at: datetime


@register("flourish.consent.PupilErased.v1", CONTEXT)
class PupilErased(Event):
    pupil_id: UUID
    data_category: str
    erased_at: datetime
