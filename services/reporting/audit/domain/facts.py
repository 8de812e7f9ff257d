"""What the audit ledger records about an event: an audit fact, built from the event's
pseudonymous ids, codes and times only.

The ledger records every event of the consent context (consent decisions, retention, erasure),
every reporting event about a share (shared, blocked, delivered, failed, ...), and every audit
fact (reads of personal data, admin actions, audit queries). Fields are picked by name from a
fixed list, so an event that gains a field never leaks it into the ledger by accident.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Any
from uuid import UUID

from services.reporting.audit.domain.canonical import instant
from shared.events.audit import AdminActionTaken
from shared.events.envelope import Envelope
from shared.events.registry import Event

# The nil academy marks a trust-level fact (shared.audit.TRUST_LEVEL).
_TRUST_LEVEL = UUID(int=0)


class Kind(StrEnum):
    """The families of audit entry a data-protection officer asks about."""

    DISCLOSURE = "disclosure"
    CONSENT = "consent"
    ERASURE = "erasure"
    ACCESS = "access"
    ADMIN = "admin"
    AUDIT = "audit"


# Action names of the events the ledger knows by name (by type, so that a producer refactoring
# its classes cannot break the ledger); others get their class name in snake case.
SHARE = "share"
_ACTIONS: dict[str, tuple[Kind, str]] = {
    "flourish.reporting.ReportShared.v1": (Kind.DISCLOSURE, SHARE),
    "flourish.reporting.ShareBlocked.v1": (Kind.DISCLOSURE, "share_blocked"),
    # The DPO withheld the family's notice of a share (the reason's code; its words stay sealed
    # in the event, which the entry names by event_id).
    "flourish.reporting.FamilyNoticeWithheld.v1": (Kind.DISCLOSURE, "family_notice_withheld"),
    "flourish.consent.ConsentGranted.v1": (Kind.CONSENT, "consent_granted"),
    "flourish.consent.ConsentRefused.v1": (Kind.CONSENT, "consent_refused"),
    "flourish.consent.ConsentWithdrawn.v1": (Kind.CONSENT, "consent_withdrawn"),
    "flourish.consent.LawfulBasisRecorded.v1": (Kind.CONSENT, "lawful_basis_recorded"),
    "flourish.consent.RetentionPolicySet.v1": (Kind.ADMIN, "retention_policy_set"),
    # A DPO keeps an opted-out child's data held beyond the grace period: an erasure not made.
    "flourish.consent.OptOutRetentionKept.v1": (Kind.ERASURE, "opt_out_retention_kept"),
    "flourish.consent.RetentionExpired.v1": (Kind.ERASURE, "retention_expired"),
    "flourish.consent.PupilErased.v1": (Kind.ERASURE, "pupil_erased"),
    "flourish.audit.PersonalDataRead.v1": (Kind.ACCESS, "personal_data_read"),
    # A request refused for who it came from or the way it came (a service client a route does
    # not answer, an internal route asked through the ingress).
    "flourish.audit.AccessRefused.v1": (Kind.ACCESS, "access_refused"),
    "flourish.audit.AuditQueried.v1": (Kind.AUDIT, "audit_queried"),
}
CONSENT_DECISIONS = ("consent_granted", "consent_refused", "consent_withdrawn")

# Who acted, when, and the ids the ledger indexes, in order of preference.
_ACTOR_FIELDS = (
    "actor", "shared_by", "recorded_by", "decided_by", "requested_by", "set_by", "erased_by", "destroyed_by",
    "delivered_by", "withheld_by",
)
_TIME_FIELDS = (
    "shared_at", "blocked_at", "delivered_at", "failed_at", "decided_at", "withdrawn_at", "expired_at",
    "erased_at", "destroyed_at", "set_at", "read_at", "taken_at", "queried_at", "occurred_at", "withheld_at",
    "refused_at",
)
_ID_FIELDS = ("pupil_id", "agency_id", "agency_category", "share_id", "consent_id", "purpose")
# Everything else worth keeping: codes and pseudonymous ids, never free text.
_DETAIL_FIELDS = (
    "document_kind", "reason", "data_category", "data_categories", "policy_id", "valid_until", "route",
    "target_kind", "target_id", "query", "result_count", "outcome", "status_code", "attempt",
    "delivery_id", "key_id", "framework_version", "record_version", "method", "covers", "basis", "basis_id",
    "withdrawal_id", "erasure_id", "key_destroyed", "counted_from", "due_on", "period_years", "period_months",
    "period_days", "retention_basis",
    # What a disclosure record needs (ReportShared, ShareBlocked): the basis, whether consent was
    # obtained, the record and version it rested on, the agency's name, the document and its hash;
    # and, for a deletion notice's delivery, the shares it covers.
    "lawful_basis", "consent_obtained", "basis_stream_id", "policy_reference", "agency_name", "document_id",
    "document_sha256", "share_ids",
    # A refused request (AccessRefused): why, and the calling service's client (its method: `method`).
    "refusal", "client",
)
# Keys of the fact itself: a detail may not reuse them (each appears once in an entry's JSON).
FACT_KEYS = frozenset(
    {"kind", "action", "event_type", "event_id", "source", "correlation_id", "occurred_at", "recorded_at",
     "academy_id", "actor", "details", *_ID_FIELDS}
)
_MAX_TEXT = 200
_FORBIDDEN_CHARACTERS = re.compile(r'[\x00-\x1f\x7f"\\]')
_CODE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


class UnrecordableEvent(Exception):
    """The event cannot become an audit entry as it stands. The reason names a field, never its
    value. The consumer retries it and then dead-letters it: it is never dropped silently."""


def is_recorded(model: type[Event]) -> bool:
    """Whether the ledger records events of this type."""
    if model.context in ("consent", "audit"):
        return True
    return model.context == "reporting" and "share_id" in model.model_fields


def kind_and_action(model: type[Event], data: Event) -> tuple[Kind, str]:
    if isinstance(data, AdminActionTaken):
        return Kind.ADMIN, data.action
    if model.event_type in _ACTIONS:
        return _ACTIONS[model.event_type]
    action = re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()
    if model.context == "reporting":
        return Kind.DISCLOSURE, action
    if model.context == "audit":
        return Kind.AUDIT, action
    erasure_words = ("erase", "expire", "destroy", "shred")
    return (Kind.ERASURE if any(word in action for word in erasure_words) else Kind.CONSENT), action


@dataclass(frozen=True)
class AuditFact:
    """One thing that happened, as the ledger records it (the "fact" half of an entry)."""

    kind: Kind
    action: str
    event_type: str
    event_id: UUID
    source: str
    correlation_id: UUID | None
    occurred_at: datetime
    academy_id: UUID | None = None
    actor: str | None = None
    ids: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self, recorded_at: datetime) -> dict[str, Any]:
        """The fact as the entry's JSON holds it; absent values are left out, not null."""
        fact: dict[str, Any] = {
            "kind": self.kind.value,
            "action": self.action,
            "event_type": self.event_type,
            "event_id": str(self.event_id),
            "source": self.source,
            "occurred_at": instant(self.occurred_at),
            "recorded_at": instant(recorded_at),
        }
        if self.correlation_id is not None:
            fact["correlation_id"] = str(self.correlation_id)
        if self.academy_id is not None:
            fact["academy_id"] = str(self.academy_id)
        if self.actor is not None:
            fact["actor"] = self.actor
        fact.update(self.ids)
        if self.details:
            fact["details"] = dict(self.details)
        return fact


def fact_from(envelope: Envelope[Event]) -> AuditFact:
    """The audit fact an event records. Raises UnrecordableEvent if a value cannot be recorded
    faithfully (a control character, say): better dead-lettered and seen than silently altered."""
    data = envelope.data
    model = type(data)
    kind, action = kind_and_action(model, data)
    _check_code("action", action)
    # Sealed fields (ciphertext under the pupil's key, shared.events.consent) stay out: the
    # ledger needs none of them, and keeps nothing that names a person even in encrypted form.
    values = {
        name: getattr(data, name)
        for name, info in model.model_fields.items()
        if "sealed" not in (info.description or "").lower()
    }
    actor = next((values[name] for name in _ACTOR_FIELDS if values.get(name) is not None), None)
    occurred = next((values[name] for name in _TIME_FIELDS if isinstance(values.get(name), datetime)), None)
    ids = {name: _text(name, values[name]) for name in _ID_FIELDS if values.get(name) is not None}
    details: dict[str, Any] = {}
    for name in _DETAIL_FIELDS:
        if values.get(name) is not None and _is_recordable_detail(values[name]):
            details[name] = _detail(name, values[name])
    for mapping_field, prefix in (("details", ""), ("filters", "filter.")):
        for key, value in (values.get(mapping_field) or {}).items():
            details[f"{prefix}{key}"] = _detail(f"{mapping_field}.{key}", value)
    clashing = FACT_KEYS & set(details)
    if clashing:
        raise UnrecordableEvent(f"details may not reuse the fact's own keys: {sorted(clashing)}")
    return AuditFact(
        kind=kind,
        action=action,
        event_type=envelope.type,
        event_id=envelope.id,
        source=_text("source", envelope.source),
        correlation_id=envelope.correlation_id,
        occurred_at=occurred or envelope.time,
        academy_id=None if envelope.academy_id == _TRUST_LEVEL else envelope.academy_id,
        actor=_text("actor", actor) if actor is not None else None,
        ids=ids,
        details=details,
    )


def _text(name: str, value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, datetime):
        return instant(value)
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    if not text or len(text) > _MAX_TEXT or _FORBIDDEN_CHARACTERS.search(text):
        raise UnrecordableEvent(
            f"{name}: must be 1 to {_MAX_TEXT} characters without quotes, backslashes or control characters"
        )
    return text


def _is_recordable_detail(value: Any) -> bool:
    scalar = (str, int, UUID, date, Enum)
    return isinstance(value, scalar) or (isinstance(value, list | tuple) and all(isinstance(v, scalar) for v in value))


def _detail(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple):
        return [_text(name, item) for item in value]
    return _text(name, value)


def _check_code(name: str, value: str) -> None:
    if not _CODE.match(value):
        raise UnrecordableEvent(f"{name}: must be a short lower-case code")
