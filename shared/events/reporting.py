"""Events the reporting service publishes: disclosures to agencies, blocked attempts, and what
became of each webhook delivery (services/reporting/sharing, docs/sharing.md).

Every event here carries `share_id` (None where a delivery is not one share's, as a deletion
notice), so the audit ledger records each of them (services/reporting/audit/domain/facts.py).
None carries personal data in clear: pupils, agencies and staff appear by pseudonymous id only.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from shared.events.consent import SealedText
from shared.events.registry import Event, register

CONTEXT = "reporting"


@register("flourish.reporting.ReportShared.v1", CONTEXT)
class ReportShared(Event):
    """A share was allowed: consent (or another lawful basis) in force for the agency's category
    covers the kind of data. What the disclosure record needs: the basis, whether consent was
    obtained, and the exact consent-record version and decision it rests on."""

    share_id: UUID
    pupil_id: UUID
    agency_id: UUID
    agency_category: str
    document_kind: str
    consent_id: UUID | None  # the consent decision, when the basis is consent
    shared_by: str
    shared_at: datetime
    document_id: UUID | None = None
    lawful_basis: str | None = None
    consent_obtained: bool | None = None
    basis_id: UUID | None = None  # the decision (consent or lawful-basis record) the share rests on
    basis_stream_id: str | None = None  # the consent service's record the decision belongs to
    record_version: int | None = None  # that record's version when consent was asked
    delivery_id: UUID | None = None  # the webhook delivery (webhook-id) carrying it
    agency_name: str | None = None  # the organisation as registered (an organisation, never a person)
    policy_reference: str | None = None  # the policy or statute a basis other than consent rests on
    document_sha256: str | None = None  # SHA-256 (hex) of the document's canonical JSON as sent


@register("flourish.reporting.ShareBlocked.v1", CONTEXT)
class ShareBlocked(Event):
    """A share, or a pending delivery of one, did not go: no consent or basis in force, consent
    withdrawn before delivery, or consent could not be established (fail closed)."""

    share_id: UUID
    pupil_id: UUID
    agency_id: UUID
    agency_category: str
    reason: str
    blocked_at: datetime
    document_kind: str | None = None
    shared_by: str | None = None
    outcome: str | None = None  # "share" (refused when asked) or "delivery" (stopped before sending)
    delivery_id: UUID | None = None
    lawful_basis: str | None = None
    consent_obtained: bool | None = None
    basis_id: UUID | None = None
    basis_stream_id: str | None = None
    record_version: int | None = None
    agency_name: str | None = None
    policy_reference: str | None = None
    document_id: UUID | None = None


@register("flourish.reporting.ShareDelivered.v1", CONTEXT)
class ShareDelivered(Event):
    """The agency's endpoint acknowledged a webhook (a share, or a deletion notice when
    `share_id` is None) with a 2xx."""

    share_id: UUID | None
    delivery_id: UUID
    pupil_id: UUID
    agency_id: UUID
    agency_category: str
    outcome: str  # "share" or "deletion_notice"
    attempt: int
    status_code: int
    delivered_at: datetime
    share_ids: list[UUID] | None = None  # a deletion notice: the shares whose data it asks deleted


@register("flourish.reporting.ShareDeliveryFailed.v1", CONTEXT)
class ShareDeliveryFailed(Event):
    """The last try of a webhook delivery failed: it is dead-lettered until someone replays it."""

    share_id: UUID | None
    delivery_id: UUID
    pupil_id: UUID
    agency_id: UUID
    agency_category: str
    outcome: str
    attempt: int
    status_code: int | None
    reason: str
    failed_at: datetime
    share_ids: list[UUID] | None = None  # a deletion notice: the shares whose data it asks deleted


@register("flourish.reporting.FamilyNoticeWithheld.v1", CONTEXT)
class FamilyNoticeWithheld(Event):
    """The data-protection officer decided that telling the family of this share (made under a
    lawful basis other than consent) would put the child at risk: no notice is sent. The reason is
    a code, with the officer's words sealed with the pupil's key (the audit ledger keeps the code
    and this event's id, never sealed text)."""

    share_id: UUID
    pupil_id: UUID
    agency_id: UUID
    agency_category: str
    document_kind: str
    reason: str  # a WithholdReason code (services/reporting/sharing/notices.py)
    reason_text: SealedText
    lawful_basis: str
    policy_reference: str | None = None
    withheld_by: str
    withheld_at: datetime
