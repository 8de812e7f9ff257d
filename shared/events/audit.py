"""Audit facts every service publishes (context "audit"): reads of pupils' personal data, admin
actions and audit queries, for the reporting service's append-only audit ledger.

Disclosures, consent changes and erasures need no audit event of their own: the ledger records
the reporting and consent services' events themselves. These are the facts that have no other
event. Nothing here is personal data in clear: pupils and staff appear only as pseudonymous ids,
reasons and categories are short codes, never free text.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import Field, field_validator

from shared.events.registry import Event, register

CONTEXT = "audit"

# A short code: a data category, a reason, an admin action, a query name. Codes keep free text
# (which could hold a child's name) out of the ledger.
CODE_PATTERN = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
# Identifiers from elsewhere (a staff subject from the identity provider, a target id): any
# printable text without quotes, backslashes or control characters, so that they read the same in
# the ledger's canonical JSON, a CSV export and a terminal.
IDENTIFIER_PATTERN = r'^[^\x00-\x1f\x7f"\\]{1,200}$'

Code = Annotated[str, Field(pattern=CODE_PATTERN)]
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]

_MAX_DETAILS = 20
_MAX_DETAIL_VALUE = 200


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("must say its time zone")
    return moment


def _check_codes(values: list[str]) -> list[str]:
    for value in values:
        if not re.fullmatch(CODE_PATTERN, value):
            raise ValueError("each item must be a short lower-case code (letters, digits, _ . : -)")
    return values


def _check_details(details: dict[str, str]) -> dict[str, str]:
    if len(details) > _MAX_DETAILS:
        raise ValueError(f"at most {_MAX_DETAILS} details")
    for key, value in details.items():
        if not re.fullmatch(CODE_PATTERN, key):
            raise ValueError("detail keys must be short lower-case codes")
        if len(value) > _MAX_DETAIL_VALUE or not re.fullmatch(IDENTIFIER_PATTERN, value or "x"):
            raise ValueError(f"detail values must be ids or codes of at most {_MAX_DETAIL_VALUE} printable characters")
    return details


@register("flourish.audit.PersonalDataRead.v1", CONTEXT)
class PersonalDataRead(Event):
    """Someone read a pupil's personal data through an API: who, which pupil, which data, and why
    if they said (a reason code, not free text)."""

    pupil_id: UUID
    actor: Identifier
    data_categories: list[str] = Field(min_length=1, max_length=20)
    route: Identifier
    reason: str | None = Field(default=None, pattern=CODE_PATTERN)
    read_at: datetime

    _read_at_aware = field_validator("read_at")(_aware)

    @field_validator("data_categories")
    @classmethod
    def _codes_only(cls, categories: list[str]) -> list[str]:
        return _check_codes(categories)


class ReadCategory(StrEnum):
    """What a recorded read returned: every category a route of the platform records. docs/audit.md
    lists exactly these (tests/unit/audit/test_audit_docs.py)."""

    ROSTER_PERSONAL_DATA = "roster_personal_data"  # a pupil's name, date of birth, UPN, gender, year
    PUPIL_ATTRIBUTES = "pupil_attributes"  # a pupil's gender and year group, read by a Flourish service
    CLASS_LIST = "class_list"  # a class's pupils with their names and year groups
    CLASS_PROFILE = "class_profile"  # a class's or screening's pupils by name, date of birth and results
    OBSERVATIONS = "observations"  # a pupil's ratings
    OBSERVATION_NOTES = "observation_notes"  # the staff's notes on those ratings
    SESSION_NOTE = "session_note"  # a planning session's note
    PUPIL_PROFILE = "pupil_profile"  # the reporting profile: scores over time, plans, sessions
    INTERVENTION_REPORT = "intervention_report"  # the anonymised intervention report (HTML or PDF)
    CONSENT_RECEIPT = "consent_receipt"  # a decision's receipt, naming the parent or carer
    SUBJECT_ACCESS_EXPORT = "subject_access_export"  # everything held on the pupil
    DATA_KEY = "data_key"  # the pupil's data key, released to a Flourish service


class AdminAction(StrEnum):
    """The admin actions the platform records: each is emitted by a route or command and proved by
    tests/integration/audit/test_every_fact.py. The field is a code, so a service can record a new
    kind of action before it is listed here (and the docs test then asks for it to be listed)."""

    FRAMEWORK_LOADED = "framework.loaded"
    AGENCY_REGISTERED = "agency.registered"
    AGENCY_ENDPOINT_CHANGED = "agency.endpoint_changed"  # unverified again until it answers verification
    AGENCY_SECRET_ROTATED = "agency.secret_rotated"
    AGENCY_DEACTIVATED = "agency.deactivated"
    DATA_KEY_DESTROYED = "data_key.destroyed"
    AUDIT_EXPORTED = "audit.exported"
    KEK_ROTATED = "kek.rotated"  # `flourish admin rotate-kek`, per trust and kind of secret
    ERASURES_REAPPLIED = "erasures.reapplied"  # `flourish admin reapply-erasures`, after a restore


@register("flourish.audit.AdminActionTaken.v1", CONTEXT)
class AdminActionTaken(Event):
    """An administrative change: a framework loaded, a policy changed, an agency registered, a
    pupil's data key destroyed, the audit ledger exported."""

    action: Code
    actor: Identifier
    target_kind: Code
    target_id: Identifier
    pupil_id: UUID | None = None
    details: dict[str, str] = Field(default_factory=dict)
    taken_at: datetime

    _taken_at_aware = field_validator("taken_at")(_aware)

    @field_validator("details")
    @classmethod
    def _ids_and_codes_only(cls, details: dict[str, str]) -> dict[str, str]:
        return _check_details(details)


class RefusalKind(StrEnum):
    """Why a request was refused as not coming from whom it must (AccessRefused.refusal; the
    `kind` label of flourish_security_refusals_total)."""

    CLIENT_NOT_ALLOWED = "client_not_allowed"  # a service client this route does not answer
    INTERNAL_PATH_VIA_INGRESS = "internal_path_via_ingress"  # an internal route asked through the ingress


@register("flourish.audit.AccessRefused.v1", CONTEXT)
class AccessRefused(Event):
    """A request refused because of who it came from or the way it came: a service client a route
    does not answer (a data key asked for by a service that needs none), or an internal route asked
    through the public ingress. Pseudonymous ids and codes only: the caller's subject and client,
    the route template, the pupil's id when the route names one."""

    refusal: Code
    actor: Identifier
    client: str | None = Field(default=None, pattern=IDENTIFIER_PATTERN)
    route: Identifier
    method: Code
    pupil_id: UUID | None = None
    refused_at: datetime

    _refused_at_aware = field_validator("refused_at")(_aware)


@register("flourish.audit.AuditQueried.v1", CONTEXT)
class AuditQueried(Event):
    """An auditor or data-protection officer asked the audit ledger a question: every audit query
    is itself audited. Filters hold pseudonymous ids, codes and dates only."""

    actor: Identifier
    query: Code
    filters: dict[str, str] = Field(default_factory=dict)
    result_count: int | None = None
    queried_at: datetime

    _queried_at_aware = field_validator("queried_at")(_aware)

    @field_validator("filters")
    @classmethod
    def _ids_and_codes_only(cls, filters: dict[str, str]) -> dict[str, str]:
        return _check_details(filters)
