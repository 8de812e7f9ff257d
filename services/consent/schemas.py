"""The request bodies of the consent API (what OpenAPI documents), and the response bodies its
routes share."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from services.consent.domain.ledger import ConsentRecord, decide_sharing, taking_part
from shared.events.consent import (
    AgencyCategory,
    ConsentMethod,
    DataKind,
    ErasureReason,
    LawfulBasis,
    OptOutRetentionBasis,
    Purpose,
    RetentionClock,
)

# A policy counts from a date the pupil's record holds; `opt_out` is the opt-out's own period.
PolicyClock = Literal[RetentionClock.LEAVING_DATE, RetentionClock.DATE_OF_BIRTH, RetentionClock.LAST_ACTIVITY,
                      RetentionClock.CASE_CLOSURE]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Consent decisions and lawful bases ---------------------------------------------------------


# One mailbox: local part and a domain of dotted labels, no spaces, quotes, angle brackets or
# control characters (so it can never add a header to the notice email it addresses).
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


def _email(value: str) -> str:
    # The message names the rule, never the value (it would echo personal data into logs).
    if len(value) > 254 or not _EMAIL.match(value) or ".." in value:
        raise ValueError("must be one email address (name@example.org)")
    return value


ContactEmail = Annotated[str, Field(min_length=3, max_length=254,
                                    description="The parent's or carer's email, where they are told before a "
                                                "share (sealed at rest)"),
                         AfterValidator(_email)]


class ParentOrCarer(_In):
    name: str = Field(min_length=1, max_length=200, description="Who gave or withdrew consent (sealed at rest)")
    relationship: str = Field(min_length=1, max_length=100, description="e.g. mother, father, foster carer")
    email: ContactEmail | None = None


class FamilyContactIn(_In):
    email: ContactEmail


class ConsentDecisionIn(_In):
    purpose: Purpose
    decision: Literal["granted", "refused"]
    given_by: ParentOrCarer
    method: ConsentMethod
    evidence_reference: str | None = Field(default=None, max_length=500, description="Where the evidence is filed (sealed)")
    decided_at: AwareDatetime
    valid_until: AwareDatetime | None = None
    covers: list[DataKind] | None = Field(default=None, description="Kinds of data a grant covers (default: all)")


class WithdrawalIn(_In):
    given_by: ParentOrCarer
    method: ConsentMethod
    evidence_reference: str | None = Field(default=None, max_length=500)
    withdrawn_at: AwareDatetime


class LawfulBasisIn(_In):
    agency_category: AgencyCategory
    basis: LawfulBasis
    reason: str = Field(min_length=1, max_length=4000, description="Why (sealed at rest: it may name people)")
    # The audit ledger records it with every share resting on the basis: no quotes, backslashes
    # or control characters.
    policy_reference: str = Field(min_length=1, max_length=200, pattern=r'^[^"\\\x00-\x1f\x7f]+$',
                                  description="The policy or statute relied on")
    covers: list[DataKind] | None = None
    decided_at: AwareDatetime
    valid_until: AwareDatetime


# --- Retention and erasure ----------------------------------------------------------------------


class PeriodIn(_In):
    years: int = 0
    months: int = 0
    days: int = 0


class RetentionPolicyIn(_In):
    counted_from: PolicyClock
    period: PeriodIn


class RetentionClockIn(_In):
    date_of_birth: date | None = Field(default=None, description="Sealed at rest with the pupil's data key")
    last_activity_on: date | None = None
    case_closed_on: date | None = None


class OptOutRetentionIn(_In):
    """A DPO's lawful reason to keep what was held on a child whose family opted out of the online tool."""

    retention_basis: OptOutRetentionBasis
    explanation: str = Field(min_length=1, max_length=2000,
                             description="Why the data must be kept (sealed at rest with the pupil's key)")


class ErasureIn(_In):
    reason: Literal[ErasureReason.RIGHT_TO_ERASURE, ErasureReason.RECORDED_IN_ERROR] = ErasureReason.RIGHT_TO_ERASURE


# --- Response bodies ----------------------------------------------------------------------------


def iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def decision_summary(r: Any) -> dict[str, Any]:
    """One row of the consent history, with no personal data: the parent's name and evidence are
    on the receipt, for those who may read it."""
    return {"decision_id": str(r.decision_id), "kind": r.kind, "purpose": r.purpose,
            "consent_id": str(r.consent_id) if r.consent_id else None, "record_version": r.record_version,
            "method": r.method, "lawful_basis": r.lawful_basis, "policy_reference": r.policy_reference,
            "covers": list(r.covers), "recorded_by": r.recorded_by, "decided_at": iso(r.decided_at),
            "valid_until": iso(r.valid_until), "recorded_at": iso(r.recorded_at)}


def purpose_status(purpose: Purpose, record: ConsentRecord, now: datetime) -> dict[str, Any]:
    """Where one purpose stands: an opt-out purpose is in force or not; a sharing purpose allows
    each kind of data or not, under consent or another lawful basis."""
    entry: dict[str, Any] = {"purpose": purpose.value, "opt_out": purpose.opt_out, "status": record.status.value,
                             "record_version": record.version,
                             "decision_id": str(record.consent_id) if record.consent_id else None,
                             "valid_until": iso(record.valid_until)}
    if purpose.opt_out:
        entry["in_force"] = taking_part(record)
    else:
        kinds = {kind.value: decide_sharing(record, purpose.agency_category, kind, now).allow  # type: ignore[arg-type]
                 for kind in DataKind}
        entry["sharing_allowed"] = kinds
        entry["lawful_basis"] = record.basis.basis.value if record.basis and record.basis.valid_until > now else None
    return entry
