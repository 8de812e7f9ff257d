"""Events the consent service publishes: consent decisions, lawful bases for sharing, retention
policies and their expiry, and erasure.

Personal data never travels here in clear. Fields marked *sealed* hold ciphertext made with the
pupil's data key (`shared.datakeys`, AES-256-GCM bound to trust, pupil and field name): a parent's
name and relationship, an evidence reference, a safeguarding reason. Erasing the pupil destroys
the key, and with it every copy of those fields on every topic.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import Field

from shared.events.registry import Event, register

CONTEXT = "consent"

# Ciphertext ("fl1.…") from shared.datakeys.DataKey.seal with the pupil's key. Typed as text so
# every consumer can carry it without the key; only holders of the key can read it.
SEALED = "sealed with the pupil's data key (shared.datakeys, AES-256-GCM)"
SealedText = Annotated[str, Field(description=SEALED)]


class AgencyCategory(StrEnum):
    """The kinds of outside agency a report, plan or profile may be shared with."""

    SPEECH_AND_LANGUAGE = "speech_and_language"
    CAMHS = "camhs"
    SOCIAL_CARE = "social_care"
    EDUCATIONAL_PSYCHOLOGY = "educational_psychology"
    LOCAL_AUTHORITY = "local_authority"
    OTHER = "other"


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

    @property
    def opt_out(self) -> bool:
        """In force unless a parent said no (taking part, processing by the online tool)."""
        return self in (Purpose.INTERVENTIONS, Purpose.ONLINE_PROCESSING)

    @property
    def agency_category(self) -> AgencyCategory | None:
        if self.opt_out:
            return None
        return AgencyCategory(self.value.removeprefix("share_"))

    @classmethod
    def for_agency(cls, category: AgencyCategory) -> Purpose:
        return cls(f"share_{category.value}")


class ConsentMethod(StrEnum):
    """How the parent or carer told the school."""

    PAPER = "paper"
    EMAIL = "email"
    VERBAL = "verbal"
    PORTAL = "portal"


class DataKind(StrEnum):
    """What may leave the academy: the kinds of document a share carries."""

    PROFILE = "profile"
    ACTION_PLAN = "action_plan"
    REPORT = "report"


class LawfulBasis(StrEnum):
    """UK GDPR Article 6 bases a disclosure can rest on. Sharing for safeguarding need not wait
    for consent: the designated safeguarding lead may rest it on one of the others."""

    CONSENT = "consent"
    PUBLIC_TASK = "public_task"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"


class DataCategory(StrEnum):
    """What a retention policy governs. `all` is everything held on the pupil: when it expires
    the pupil is erased (their data key destroyed) in every service."""

    ALL = "all"
    ASSESSMENTS = "assessments"
    ACTION_PLANS = "action_plans"
    SHARED_REPORTS = "shared_reports"


class RetentionClock(StrEnum):
    """The date a retention period is counted from."""

    LEAVING_DATE = "leaving_date"
    DATE_OF_BIRTH = "date_of_birth"
    LAST_ACTIVITY = "last_activity"
    CASE_CLOSURE = "case_closure"
    # Not a policy's clock: the day the family's opt-out of processing by the online tool was
    # recorded. The data already held expires when the DPO's grace period counted from it ends
    # (RetentionExpired for assessments, action plans and shared reports; never `all`).
    OPT_OUT = "opt_out"


class OptOutRetentionBasis(StrEnum):
    """Why a DPO keeps what was held on a child whose family opted out of processing by the
    online tool (UK GDPR Art. 17(3) and 21(1): compelling legitimate grounds, legal claims)."""

    SAFEGUARDING = "safeguarding"
    LEGAL_OBLIGATION = "legal_obligation"
    LEGAL_CLAIMS = "legal_claims"
    PUBLIC_TASK = "public_task"


class ErasureReason(StrEnum):
    RETENTION_EXPIRED = "retention_expired"
    RIGHT_TO_ERASURE = "right_to_erasure"
    RECORDED_IN_ERROR = "recorded_in_error"


@register("flourish.consent.ConsentGranted.v1", CONTEXT)
class ConsentGranted(Event):
    """A parent or carer said yes to a purpose. `record_version` is the version of the pupil's
    record for that purpose after this decision: what a sharing decision says it rests on."""

    consent_id: UUID
    pupil_id: UUID
    purpose: Purpose
    record_version: int
    method: ConsentMethod
    given_by: SealedText  # sealed {"name", "relationship"} of the parent or carer
    evidence_reference: str | None = Field(default=None, description=SEALED)
    covers: list[DataKind]
    recorded_by: str
    decided_at: datetime
    valid_until: datetime | None = None


@register("flourish.consent.ConsentRefused.v1", CONTEXT)
class ConsentRefused(Event):
    """A parent or carer said no (for taking part or processing: they opted out)."""

    consent_id: UUID
    pupil_id: UUID
    purpose: Purpose
    record_version: int
    method: ConsentMethod
    given_by: SealedText
    evidence_reference: str | None = Field(default=None, description=SEALED)
    recorded_by: str
    decided_at: datetime


@register("flourish.consent.ConsentWithdrawn.v1", CONTEXT)
class ConsentWithdrawn(Event):
    """Withdrawal can come at any time; agencies that already received data are told.
    `consent_id` names the grant withdrawn; `withdrawal_id` this decision."""

    consent_id: UUID
    withdrawal_id: UUID
    pupil_id: UUID
    purpose: Purpose
    record_version: int
    method: ConsentMethod
    given_by: SealedText
    evidence_reference: str | None = Field(default=None, description=SEALED)
    recorded_by: str
    withdrawn_at: datetime


@register("flourish.consent.LawfulBasisRecorded.v1", CONTEXT)
class LawfulBasisRecorded(Event):
    """Sharing with an agency rests on a basis other than consent (safeguarding): who decided,
    why (sealed: the reason may name people), under which policy, for how long."""

    basis_id: UUID
    pupil_id: UUID
    purpose: Purpose
    agency_category: AgencyCategory
    record_version: int
    basis: LawfulBasis
    reason: SealedText
    policy_reference: str
    covers: list[DataKind]
    decided_by: str
    decided_at: datetime
    valid_until: datetime


@register("flourish.consent.OptOutRetentionKept.v1", CONTEXT)
class OptOutRetentionKept(Event):
    """A DPO recorded, within the grace period after a family opted out of processing by the
    online tool, a lawful reason to keep the child's assessment, planning and reporting data
    already held: the scheduler does not erase it at the period's end. `consent_id` names the
    opt-out decision (the refusal, or the withdrawal's id); the explanation is sealed (it may
    name people)."""

    consent_id: UUID
    pupil_id: UUID
    purpose: Purpose
    retention_basis: OptOutRetentionBasis
    explanation: SealedText
    decided_by: str
    decided_at: datetime


@register("flourish.consent.RetentionPolicySet.v1", CONTEXT)
class RetentionPolicySet(Event):
    """An academy's retention period for one category of data, replacing any earlier one."""

    policy_id: UUID
    academy_id: UUID
    data_category: DataCategory
    counted_from: RetentionClock
    period_years: int
    period_months: int
    period_days: int
    set_by: str
    set_at: datetime


@register("flourish.consent.RetentionExpired.v1", CONTEXT)
class RetentionExpired(Event):
    """A retention period ended: every service erases or crypto-shreds what it holds of that
    category for that pupil. Emitted exactly once per pupil and category."""

    pupil_id: UUID
    data_category: DataCategory
    policy_id: UUID
    counted_from: RetentionClock
    due_on: date
    expired_at: datetime


@register("flourish.consent.PupilErased.v1", CONTEXT)
class PupilErased(Event):
    """The pupil's data key is destroyed: every service drops or redacts what it holds for the
    pupil, and forgets any cached key. This event itself holds nothing personal."""

    pupil_id: UUID
    erasure_id: UUID
    data_category: DataCategory
    reason: ErasureReason
    requested_by: str
    key_destroyed: bool
    erased_at: datetime
