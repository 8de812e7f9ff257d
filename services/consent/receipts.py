"""The family's receipt for one consent decision: what was decided, by whom, for what, how to
change their mind. It names the parent or carer, so it is built only after the read is audited,
from fields opened with the pupil's data key."""

from __future__ import annotations

from typing import Any

from services.consent import handlers
from services.consent.handlers import Pupil
from services.consent.schemas import iso
from shared.datakeys import DataKey
from shared.events.consent import Purpose

RECEIPT_VERSION = "flourish-consent-receipt/1"

PURPOSE_TEXT = {
    Purpose.INTERVENTIONS: "Your child taking part in Thrive sessions (you may opt out)",
    Purpose.ONLINE_PROCESSING: "Your child's information being processed by the online Thrive tool (you may opt out)",
    Purpose.SHARE_SPEECH_AND_LANGUAGE: "Sharing your child's Thrive profile or plan with speech and language therapy",
    Purpose.SHARE_CAMHS: "Sharing your child's Thrive profile or plan with CAMHS",
    Purpose.SHARE_SOCIAL_CARE: "Sharing your child's Thrive profile or plan with social care",
    Purpose.SHARE_EDUCATIONAL_PSYCHOLOGY: "Sharing your child's Thrive profile or plan with educational psychology",
    Purpose.SHARE_LOCAL_AUTHORITY: "Sharing your child's Thrive profile or plan with the local authority",
    Purpose.SHARE_OTHER: "Sharing your child's Thrive profile or plan with another named provider",
}

HOW_TO_CHANGE_YOUR_MIND = ("Tell the school office at any time, in writing, by email or in person. "
                           "A withdrawal takes effect at once, and agencies that already received "
                           "information are told.")


def receipt(row: Any, pupil: Pupil, key: DataKey) -> dict[str, Any]:
    """The receipt for a consent_decisions row, its sealed fields opened with `key`."""
    given_by = key.open_json(row.given_by_sealed, handlers.GIVEN_BY) if row.given_by_sealed else None
    evidence = key.open_text(row.evidence_sealed, handlers.EVIDENCE) if row.evidence_sealed else None
    reason = key.open_text(row.reason_sealed, handlers.REASON) if row.reason_sealed else None
    purpose = Purpose(row.purpose)
    return {
        "receipt_version": RECEIPT_VERSION,
        "receipt_id": str(row.decision_id),
        "jurisdiction": "UK (UK GDPR, Data Protection Act 2018)",
        "controller": {"trust_id": str(pupil.trust_id), "academy_id": str(pupil.academy_id)},
        "pupil_id": str(pupil.pupil_id),
        "purpose": purpose.value,
        "purpose_description": PURPOSE_TEXT[purpose],
        "decision": row.kind,
        "lawful_basis": row.lawful_basis,
        "given_by": given_by,
        "method": row.method,
        "evidence_reference": evidence,
        "reason": reason,
        "policy_reference": row.policy_reference,
        "covers": list(row.covers),
        "recorded_by": row.recorded_by,
        "decided_at": iso(row.decided_at),
        "valid_until": iso(row.valid_until),
        "withdraws_consent": str(row.consent_id) if row.kind == "withdrawn" and row.consent_id else None,
        "record_version": row.record_version,
        "how_to_change_your_mind": HOW_TO_CHANGE_YOUR_MIND,
    }
