"""The consent service's HTTP API: parse, authorise, call a handler, shape the response.

Roles: senco (the academy's senior staff: SENCo, designated safeguarding lead, head) and dpo
record consent and lawful bases; trust_admin and dpo set retention policies; only the dpo erases
and exports; only Flourish services (role `service`) get data keys. Staff reach pupils of their
own academies; trust roles reach their trust; nobody reaches another trust.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import httpx
import jwt
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.consent import handlers, scheduler as retention
from services.consent.domain.ledger import decide_sharing, taking_part
from services.consent.domain.retention import RetentionPeriod
from services.consent.handlers import ConsentDeps, GivenBy
from services.consent.projections import record_from_row
from services.consent.tables import (
    consent_decisions,
    consent_records,
    data_keys,
    erasures,
    kernel,
    pupils,
    retention_expiries,
)
from shared.api import Cursor, PageSize, decode_cursor, encode_cursor, requires, run_command
from shared.audit import PersonalDataReads, audit_reads
from shared.auth import Principal, Role
from shared.datakeys import ALGORITHM, DataKeyDestroyed, UnknownDataKey
from shared.events.consent import (
    AgencyCategory,
    ConsentMethod,
    DataCategory,
    DataKind,
    ErasureReason,
    LawfulBasis,
    Purpose,
    RetentionClock,
)
from shared.problems import BadRequest, Forbidden, Gone, Unauthenticated
from shared.service import Runtime, dependencies_of, runtime_of
from shared.tenancy import across_trusts

router = APIRouter(tags=["consent"])

RECORDERS = (Role.senco, Role.dpo)
READERS = (Role.senco, Role.practitioner, Role.dpo, Role.auditor)
DECIDERS = (Role.service, Role.senco, Role.practitioner, Role.dpo)
POLICY_SETTERS = (Role.trust_admin, Role.dpo)
POLICY_READERS = (Role.trust_admin, Role.dpo, Role.senco, Role.auditor)
CLOCK_KEEPERS = (Role.service, Role.senco, Role.dpo)


class VerifiedTokens:
    """Bearer tokens already verified, for at most a minute (and never past their expiry).

    The sharing decision is asked twice per share, by a service holding one token for an hour:
    verifying its signature every time would be a quarter of the decision's latency. A key
    withdrawn from the JWKS stops being honoured for a cached token within `max_age_s`.
    """

    def __init__(self, max_entries: int = 4096, max_age_s: float = 60.0) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._max_entries = max_entries
        self._max_age_s = max_age_s

    def principal(self, request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if credentials is None:
            raise Unauthenticated.missing_token()
        token = credentials.credentials
        now = time.monotonic()
        cached = self._entries.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = request.app.state.runtime.auth.verifier.verify(token)  # raises 401 if not valid
        claims = jwt.decode(token, options={"verify_signature": False})
        lifetime = min(self._max_age_s, float(claims["exp"]) - time.time())
        if lifetime > 0:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()  # simple and bounded; a refill costs one verification each
            self._entries[token] = (principal, now + lifetime)
        return principal


_verified = VerifiedTokens()
_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT")


def requires_cached(*roles: Role) -> Callable[..., Principal]:
    """Like shared.api.requires, with verified tokens remembered briefly (hot read paths only)."""
    wanted = ", ".join(sorted(roles))

    def with_role(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        principal = _verified.principal(request, credentials)
        if not principal.has_role(*roles):
            raise Forbidden(f"this requires one of the roles: {wanted}")
        return principal

    return with_role


def deps_of(request: Request) -> ConsentDeps:
    return dependencies_of(request).handlers  # type: ignore[no-any-return]


Deps = Annotated[ConsentDeps, Depends(deps_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="Retry safely: the first response is returned, nothing happens twice.")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParentOrCarer(_In):
    name: str = Field(min_length=1, max_length=200, description="Who gave or withdrew consent (sealed at rest)")
    relationship: str = Field(min_length=1, max_length=100, description="e.g. mother, father, foster carer")


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
    policy_reference: str = Field(min_length=1, max_length=200, description="The policy or statute relied on")
    covers: list[DataKind] | None = None
    decided_at: AwareDatetime
    valid_until: AwareDatetime


class PeriodIn(_In):
    years: int = 0
    months: int = 0
    days: int = 0


class RetentionPolicyIn(_In):
    counted_from: RetentionClock
    period: PeriodIn


class RetentionClockIn(_In):
    date_of_birth: date | None = Field(default=None, description="Sealed at rest with the pupil's data key")
    last_activity_on: date | None = None
    case_closed_on: date | None = None


class ErasureIn(_In):
    reason: Literal[ErasureReason.RIGHT_TO_ERASURE, ErasureReason.RECORDED_IN_ERROR] = ErasureReason.RIGHT_TO_ERASURE


# --- Consent decisions --------------------------------------------------------------------------


@router.post("/pupils/{pupil_id}/consents", status_code=201, summary="Record a parent's or carer's consent decision")
async def record_consent(
    pupil_id: UUID, body: ConsentDecisionIn, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*RECORDERS))], idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def command(conn: Any) -> tuple[int, Any]:
        result = await handlers.record_decision(
            conn, deps, principal, pupil_id, purpose=body.purpose, granted=body.decision == "granted",
            given_by=GivenBy(body.given_by.name, body.given_by.relationship), method=body.method,
            evidence_reference=body.evidence_reference, decided_at=body.decided_at, valid_until=body.valid_until,
            covers=frozenset(body.covers) if body.covers is not None else None,
        )
        return 201, result.body()

    async with runtime.engine.begin() as conn:
        return await run_command(conn, kernel.idempotency, principal, idempotency_key,
                                 {"pupil_id": str(pupil_id), **body.model_dump(mode="json")}, command)


@router.post("/pupils/{pupil_id}/consents/{purpose}/withdrawal", status_code=201,
             summary="Withdraw consent that was granted (takes effect at once)")
async def withdraw_consent(
    pupil_id: UUID, purpose: Purpose, body: WithdrawalIn, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*RECORDERS))], idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def command(conn: Any) -> tuple[int, Any]:
        result = await handlers.withdraw_consent(
            conn, deps, principal, pupil_id, purpose=purpose,
            given_by=GivenBy(body.given_by.name, body.given_by.relationship), method=body.method,
            evidence_reference=body.evidence_reference, withdrawn_at=body.withdrawn_at,
        )
        return 201, result.body()

    async with runtime.engine.begin() as conn:
        return await run_command(conn, kernel.idempotency, principal, idempotency_key,
                                 {"pupil_id": str(pupil_id), "purpose": purpose.value,
                                  **body.model_dump(mode="json")}, command)


@router.post("/pupils/{pupil_id}/lawful-bases", status_code=201,
             summary="Record a lawful basis other than consent for sharing (safeguarding)")
async def record_lawful_basis(
    pupil_id: UUID, body: LawfulBasisIn, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*RECORDERS))], idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def command(conn: Any) -> tuple[int, Any]:
        result = await handlers.record_lawful_basis(
            conn, deps, principal, pupil_id, category=body.agency_category, basis=body.basis, reason=body.reason,
            policy_reference=body.policy_reference, covers=frozenset(body.covers) if body.covers else None,
            decided_at=body.decided_at, valid_until=body.valid_until,
        )
        return 201, result.body()

    async with runtime.engine.begin() as conn:
        return await run_command(conn, kernel.idempotency, principal, idempotency_key,
                                 {"pupil_id": str(pupil_id), **body.model_dump(mode="json")}, command)


@router.get("/pupils/{pupil_id}/consents", summary="Where each purpose stands for a pupil now")
async def consent_status(
    pupil_id: UUID, runtime: RuntimeDep, deps: Deps, principal: Annotated[Principal, Depends(requires(*READERS))],
) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        pupil = await handlers.pupil_in_scope(conn, principal, pupil_id)
        rows = {r.purpose: r for r in await conn.execute(
            select(consent_records).where(consent_records.c.pupil_id == pupil_id))}
    now = deps.clock()
    purposes = []
    for purpose in Purpose:
        record = record_from_row(rows.get(purpose.value), pupil_id, purpose)
        entry: dict[str, Any] = {"purpose": purpose.value, "opt_out": purpose.opt_out, "status": record.status.value,
                                 "record_version": record.version,
                                 "decision_id": str(record.consent_id) if record.consent_id else None,
                                 "valid_until": _iso(record.valid_until)}
        if purpose.opt_out:
            entry["in_force"] = taking_part(record)
        else:
            kinds = {kind.value: decide_sharing(record, purpose.agency_category, kind, now).allow  # type: ignore[arg-type]
                     for kind in DataKind}
            entry["sharing_allowed"] = kinds
            entry["lawful_basis"] = record.basis.basis.value if record.basis and record.basis.valid_until > now else None
        purposes.append(entry)
    return {"pupil_id": str(pupil_id), "academy_id": str(pupil.academy_id), "purposes": purposes}


@router.get("/pupils/{pupil_id}/consents/history", summary="Every decision on the pupil's record, oldest first")
async def consent_history(
    pupil_id: UUID, runtime: RuntimeDep, principal: Annotated[Principal, Depends(requires(*READERS))],
    limit: PageSize = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    after = _cursor_int(cursor, "seq")
    async with runtime.engine.connect() as conn:
        await handlers.pupil_in_scope(conn, principal, pupil_id, allow_erased=True)
        rows = (await conn.execute(
            select(consent_decisions).where(consent_decisions.c.pupil_id == pupil_id, consent_decisions.c.seq > after)
            .order_by(consent_decisions.c.seq).limit(limit + 1)
        )).all()
    items = [_decision_summary(r) for r in rows[:limit]]
    next_cursor = encode_cursor({"seq": rows[limit - 1].seq}) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


def _decision_summary(r: Any) -> dict[str, Any]:
    # No personal data: the parent's name and evidence are on the receipt, for those who may read it.
    return {"decision_id": str(r.decision_id), "kind": r.kind, "purpose": r.purpose,
            "consent_id": str(r.consent_id) if r.consent_id else None, "record_version": r.record_version,
            "method": r.method, "lawful_basis": r.lawful_basis, "policy_reference": r.policy_reference,
            "covers": list(r.covers), "recorded_by": r.recorded_by, "decided_at": _iso(r.decided_at),
            "valid_until": _iso(r.valid_until), "recorded_at": _iso(r.recorded_at)}


@router.get("/consent-decisions/{decision_id}/receipt",
            summary="The family's receipt for one decision: JSON, or readable (format=text|html or Accept)")
async def receipt(
    decision_id: UUID, request: Request, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*RECORDERS))],
    read: Annotated[PersonalDataReads, Depends(audit_reads)],
    format: Literal["json", "text", "html"] | None = None,
) -> Response:
    async with runtime.engine.begin() as conn:
        row = (await conn.execute(select(consent_decisions).where(consent_decisions.c.decision_id == decision_id))).first()
        if row is None:
            raise handlers.UnknownPupil("no such consent decision")
        pupil = await handlers.pupil_in_scope(conn, principal, row.pupil_id, allow_erased=True)
        if pupil.erased_at is not None:
            raise Gone("the pupil was erased; the receipt's personal data no longer exists")
        # The receipt names the parent or carer: the read is audited in the same transaction.
        await read.record(conn, runtime.store, pupil_id=pupil.pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=["consent_receipt"])
        key = await deps.vault.key_for(conn, pupil.trust_id, pupil.pupil_id, create=False)
    given_by = key.open_json(row.given_by_sealed, handlers.GIVEN_BY) if row.given_by_sealed else None
    evidence = key.open_text(row.evidence_sealed, handlers.EVIDENCE) if row.evidence_sealed else None
    reason = key.open_text(row.reason_sealed, handlers.REASON) if row.reason_sealed else None
    document = _receipt_document(row, pupil, given_by, evidence, reason)
    chosen = format or _negotiate(request)
    headers = {"Cache-Control": "no-store"}
    if chosen == "html":
        return HTMLResponse(_html("Consent receipt", document), headers=headers)
    if chosen == "text":
        return PlainTextResponse(_text("Consent receipt", document), headers=headers)
    return JSONResponse(document, headers=headers)


def _receipt_document(row: Any, pupil: handlers.Pupil, given_by: Any, evidence: str | None,
                      reason: str | None) -> dict[str, Any]:
    purpose = Purpose(row.purpose)
    return {
        "receipt_version": "flourish-consent-receipt/1",
        "receipt_id": str(row.decision_id),
        "jurisdiction": "UK (UK GDPR, Data Protection Act 2018)",
        "controller": {"trust_id": str(pupil.trust_id), "academy_id": str(pupil.academy_id)},
        "pupil_id": str(pupil.pupil_id),
        "purpose": purpose.value,
        "purpose_description": _PURPOSE_TEXT[purpose],
        "decision": row.kind,
        "lawful_basis": row.lawful_basis,
        "given_by": given_by,
        "method": row.method,
        "evidence_reference": evidence,
        "reason": reason,
        "policy_reference": row.policy_reference,
        "covers": list(row.covers),
        "recorded_by": row.recorded_by,
        "decided_at": _iso(row.decided_at),
        "valid_until": _iso(row.valid_until),
        "withdraws_consent": str(row.consent_id) if row.kind == "withdrawn" and row.consent_id else None,
        "record_version": row.record_version,
        "how_to_change_your_mind": "Tell the school office at any time, in writing, by email or in person. "
                                   "A withdrawal takes effect at once, and agencies that already received "
                                   "information are told.",
    }


_PURPOSE_TEXT = {
    Purpose.INTERVENTIONS: "Your child taking part in Thrive sessions (you may opt out)",
    Purpose.ONLINE_PROCESSING: "Your child's information being processed by the online Thrive tool (you may opt out)",
    Purpose.SHARE_SPEECH_AND_LANGUAGE: "Sharing your child's Thrive profile or plan with speech and language therapy",
    Purpose.SHARE_CAMHS: "Sharing your child's Thrive profile or plan with CAMHS",
    Purpose.SHARE_SOCIAL_CARE: "Sharing your child's Thrive profile or plan with social care",
    Purpose.SHARE_EDUCATIONAL_PSYCHOLOGY: "Sharing your child's Thrive profile or plan with educational psychology",
    Purpose.SHARE_LOCAL_AUTHORITY: "Sharing your child's Thrive profile or plan with the local authority",
    Purpose.SHARE_OTHER: "Sharing your child's Thrive profile or plan with another named provider",
}


# --- May this be shared now? --------------------------------------------------------------------


@router.get("/sharing-decisions", summary="May this academy share this kind of data about this pupil with this agency category now?")
async def sharing_decision(
    request: Request, principal: Annotated[Principal, Depends(requires_cached(*DECIDERS))],
    pupil_id: UUID, agency_category: AgencyCategory, data_kind: DataKind,
) -> Response:
    now = deps_of(request).clock()
    pupil, decision = await handlers.sharing_decision(dependencies_of(request).decisions, principal, pupil_id,
                                                      agency_category, data_kind, now)
    purpose = Purpose.for_agency(agency_category)
    return Response(orjson.dumps({
        "decision": "allow" if decision.allow else "deny",
        "allow": decision.allow,
        "reason": decision.reason,
        "pupil_id": str(pupil_id),
        "academy_id": str(pupil.academy_id),
        "agency_category": agency_category.value,
        "data_kind": data_kind.value,
        # What the disclosure record needs either way: the basis, and whether consent was obtained.
        "lawful_basis": decision.lawful_basis.value if decision.lawful_basis else None,
        "consent_obtained": decision.consent_obtained,
        "record": {"stream_id": handlers.record_stream(pupil_id, purpose), "version": decision.record_version,
                   "decision_id": str(decision.record_id) if decision.record_id else None},
        "valid_until": _iso(decision.valid_until),
        "decided_at": now.isoformat(),
    }), media_type="application/json", headers={"Cache-Control": "no-store"})


# --- Retention ----------------------------------------------------------------------------------


@router.put("/academies/{academy_id}/retention-policies/{data_category}",
            summary="Set the academy's retention period for a category of data")
async def set_retention_policy(
    academy_id: UUID, data_category: DataCategory, body: RetentionPolicyIn, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*POLICY_SETTERS))], idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    period = RetentionPeriod(body.period.years, body.period.months, body.period.days)  # 422 if not positive

    async def command(conn: Any) -> tuple[int, Any]:
        policy = await handlers.set_retention_policy(conn, deps, principal, academy_id, category=data_category,
                                                     counted_from=body.counted_from, period=period)
        return 200, policy

    async with runtime.engine.begin() as conn:
        return await run_command(conn, kernel.idempotency, principal, idempotency_key,
                                 {"academy_id": str(academy_id), "data_category": data_category.value,
                                  **body.model_dump(mode="json")}, command)


@router.get("/academies/{academy_id}/retention-policies", summary="The academy's effective retention policies (defaults included)")
async def retention_policies(
    academy_id: UUID, runtime: RuntimeDep, principal: Annotated[Principal, Depends(requires(*POLICY_READERS))],
) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        trust_id = await handlers.ensure_academy_scope(conn, principal, academy_id)
        policies = await handlers.academy_policies(conn, trust_id, academy_id)
    return {"academy_id": str(academy_id), "items": [handlers.policy_body(p, academy_id) for p in policies]}


@router.get("/academies/{academy_id}/retention/preview", summary="What expires in the next N days (overdue included)")
async def retention_preview(
    academy_id: UUID, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*POLICY_READERS))],
    days: Annotated[int, Query(ge=0, le=3660)] = 30, limit: PageSize = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    today = deps.clock().date()
    async with runtime.engine.connect() as conn:
        trust_id = await handlers.ensure_academy_scope(conn, principal, academy_id)
        found, incomplete = await retention.preview(conn, deps, trust_id, academy_id, today + timedelta(days=days))
    start = _cursor_int(cursor, "offset")
    page = found[start:start + limit]
    more = start + limit < len(found)
    return {
        "academy_id": str(academy_id), "until": (today + timedelta(days=days)).isoformat(),
        "items": [{"pupil_id": str(e.pupil_id), "data_category": e.data_category.value,
                   "policy_id": str(e.policy_id), "counted_from": e.counted_from.value,
                   "due_on": e.due_on.isoformat(), "overdue": e.due_on <= today} for e in page],
        "next_cursor": encode_cursor({"offset": start + limit}) if more else None,
        "pupils_with_incomplete_clock": incomplete,
    }


@router.put("/pupils/{pupil_id}/retention-clock",
            summary="Dates retention is counted from that no event carries (date of birth, case closure)")
async def set_retention_clock(
    pupil_id: UUID, body: RetentionClockIn, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*CLOCK_KEEPERS))],
) -> dict[str, Any]:
    async with runtime.engine.begin() as conn:
        return await handlers.set_retention_clock(conn, deps, principal, pupil_id, date_of_birth=body.date_of_birth,
                                                  last_activity_on=body.last_activity_on,
                                                  case_closed_on=body.case_closed_on)


@router.post("/retention/runs", summary="Run the retention scheduler now for your trust (it also runs on its own)")
async def run_retention(
    request: Request, principal: Annotated[Principal, Depends(requires(*POLICY_SETTERS))],
) -> dict[str, Any]:
    if not principal.trust_wide:
        raise Forbidden("running retention is a trust-level action")
    emitted = await dependencies_of(request).retention.run_once(trust_id=principal.trust_id)
    return {"expired": [{"pupil_id": str(e.pupil_id), "data_category": e.data_category.value,
                         "due_on": e.due_on.isoformat()} for e in emitted]}


# --- Data keys ----------------------------------------------------------------------------------


@router.get("/pupils/{pupil_id}/data-key", summary="The pupil's data key, for Flourish services only (410 after erasure)")
async def data_key(
    pupil_id: UUID, runtime: RuntimeDep, deps: Deps, principal: Annotated[Principal, Depends(requires(Role.service))],
) -> JSONResponse:
    # Made on first request, so a service can seal a new pupil's data before this service has
    # consumed their enrolment; never re-made after erasure. In production this answer travels
    # only over TLS (it is the key itself).
    # A key is the pupil's, whichever trust asks: the owner checks below must see every trust's
    # keys and pupils, or a key would be minted twice.
    async with runtime.engine.begin() as conn, across_trusts(conn):
        pupil = await handlers.find_pupil(conn, pupil_id)
        if pupil is not None and pupil.trust_id != principal.trust_id:
            raise Forbidden("this pupil is outside your trust")
        status = await deps.vault.status(conn, pupil_id)
        if status is not None and status[0] != principal.trust_id:
            raise Forbidden("this pupil is outside your trust")
        try:
            key = await deps.vault.key_for(conn, principal.trust_id, pupil_id)
        except DataKeyDestroyed:
            raise Gone("the pupil was erased and their data key destroyed") from None
        except UnknownDataKey:
            raise Forbidden("this pupil is outside your trust") from None
    return JSONResponse(
        {"pupil_id": str(pupil_id), "trust_id": str(key.trust_id), "algorithm": ALGORITHM,
         "key": base64.b64encode(key.material).decode()},
        headers={"Cache-Control": "no-store"},
    )


# --- Erasure ------------------------------------------------------------------------------------


@router.post("/pupils/{pupil_id}/erasure", status_code=201,
             summary="Erase a pupil everywhere: destroy their data key, tell every service")
async def erase_pupil(
    pupil_id: UUID, runtime: RuntimeDep, deps: Deps, principal: Annotated[Principal, Depends(requires(Role.dpo))],
    body: ErasureIn | None = None, idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    reason = ErasureReason((body or ErasureIn()).reason)

    async def command(conn: Any) -> tuple[int, Any]:
        return 201, await handlers.request_erasure(conn, deps, principal, pupil_id, reason)

    async with runtime.engine.begin() as conn:
        return await run_command(conn, kernel.idempotency, principal, idempotency_key,
                                 {"pupil_id": str(pupil_id), "reason": reason.value}, command)


@router.get("/pupils/{pupil_id}/erasure", summary="The non-personal record that a pupil was erased")
async def erasure_record(
    pupil_id: UUID, runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(requires(Role.dpo, Role.auditor, Role.trust_admin))],
) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        row = (await conn.execute(select(erasures).where(erasures.c.pupil_id == pupil_id))).first()
        if row is None:
            await handlers.pupil_in_scope(conn, principal, pupil_id)  # 404 / 403 as usual
            raise handlers.UnknownPupil("the pupil has not been erased")
        key_row = (await conn.execute(select(data_keys.c.wrapped_key, data_keys.c.destroyed_at)
                                      .where(data_keys.c.pupil_id == pupil_id))).first()
    pupil = handlers.Pupil(row.pupil_id, row.trust_id, row.academy_id, row.erased_at)
    handlers.ensure_pupil_scope(principal, pupil)
    body = handlers.erasure_body(row.erasure_id, pupil, row.reason, row.requested_by, row.key_destroyed, row.erased_at)
    body["key_material_present"] = bool(key_row is not None and key_row.wrapped_key is not None)
    return body


# --- Subject access -----------------------------------------------------------------------------


@router.get("/pupils/{pupil_id}/subject-access",
            summary="Everything held on one pupil, here and (when configured) in the other services")
async def subject_access(
    pupil_id: UUID, request: Request, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(Role.dpo))],
    read: Annotated[PersonalDataReads, Depends(audit_reads)],
    format: Literal["json", "text", "html"] | None = None, include_services: bool = True,
) -> Response:
    async with runtime.engine.begin() as conn:
        pupil = await handlers.pupil_in_scope(conn, principal, pupil_id, allow_erased=True)
        if pupil.erased_at is not None:
            raise Gone("the pupil was erased; nothing personal is held any more")
        await read.record(conn, runtime.store, pupil_id=pupil.pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=["subject_access_export"])
        section = await _consent_section(conn, deps, pupil)
    document: dict[str, Any] = {
        "export_version": "flourish-subject-access/1",
        "pupil_id": str(pupil_id),
        "generated_at": deps.clock().isoformat(),
        "services": {"consent": section},
    }
    if include_services and dependencies_of(request).subject_access_peers:
        document["services"].update(await _peer_sections(request, pupil_id))
    chosen = format or _negotiate(request)
    headers = {"Cache-Control": "no-store"}
    if chosen == "html":
        return HTMLResponse(_html("Subject access export", document), headers=headers)
    if chosen == "text":
        return PlainTextResponse(_text("Subject access export", document), headers=headers)
    return JSONResponse(document, headers=headers)


async def _consent_section(conn: Any, deps: ConsentDeps, pupil: handlers.Pupil) -> dict[str, Any]:
    row = (await conn.execute(select(pupils).where(pupils.c.pupil_id == pupil.pupil_id))).one()
    key = await deps.vault.key_for(conn, pupil.trust_id, pupil.pupil_id)
    dob = key.open_text(row.date_of_birth_sealed, handlers.DATE_OF_BIRTH) if row.date_of_birth_sealed else None
    decisions = []
    for d in await conn.execute(select(consent_decisions).where(consent_decisions.c.pupil_id == pupil.pupil_id)
                                .order_by(consent_decisions.c.seq)):
        entry = _decision_summary(d)
        entry["given_by"] = key.open_json(d.given_by_sealed, handlers.GIVEN_BY) if d.given_by_sealed else None
        entry["evidence_reference"] = key.open_text(d.evidence_sealed, handlers.EVIDENCE) if d.evidence_sealed else None
        entry["reason"] = key.open_text(d.reason_sealed, handlers.REASON) if d.reason_sealed else None
        decisions.append(entry)
    expired = [{"data_category": e.data_category, "due_on": e.due_on.isoformat(), "expired_at": _iso(e.expired_at)}
               for e in await conn.execute(select(retention_expiries).where(retention_expiries.c.pupil_id == pupil.pupil_id))]
    return {
        "roster": {"academy_id": str(row.academy_id), "enrolled_on": _iso(row.enrolled_on), "left_on": _iso(row.left_on),
                   "last_activity_on": _iso(row.last_activity_on), "case_closed_on": _iso(row.case_closed_on),
                   "date_of_birth": dob},
        "consent_decisions": decisions,
        "retention_expired": expired,
        "data_key": {"exists": True, "algorithm": ALGORITHM, "note": "the key itself is never exported"},
    }


async def _peer_sections(request: Request, pupil_id: UUID) -> dict[str, Any]:
    """Each configured service's own export, asked with the DPO's own token (no new privilege)."""
    authorization = request.headers.get("authorization", "")
    sections: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=10.0) as client:
        for name, base_url in sorted(dependencies_of(request).subject_access_peers.items()):
            try:
                response = await client.get(f"{base_url.rstrip('/')}/pupils/{pupil_id}/subject-access",
                                            params={"include_services": "false"},
                                            headers={"Authorization": authorization})
            except httpx.HTTPError as error:
                sections[name] = {"status": "unreachable", "error_type": type(error).__name__}
                continue
            if response.status_code == 200:
                payload = response.json()
                sections[name] = payload.get("services", {}).get(name, payload)
            else:
                sections[name] = {"status": "not_provided", "http_status": response.status_code}
    return sections


# --- Rendering ----------------------------------------------------------------------------------


def _negotiate(request: Request) -> str:
    accept = request.headers.get("accept", "")
    if "text/html" in accept:
        return "html"
    if "text/plain" in accept:
        return "text"
    return "json"


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _text(title: str, document: Any) -> str:
    lines = [title, "=" * len(title), ""]

    def walk(value: Any, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict | list) and v:
                    lines.append(f"{pad}{_label(k)}:")
                    walk(v, indent + 1)
                else:
                    lines.append(f"{pad}{_label(k)}: {_plain(v)}")
        elif isinstance(value, list):
            for i, item in enumerate(value, 1):
                lines.append(f"{pad}{i}.")
                walk(item, indent + 1)
        else:
            lines.append(f"{pad}{_plain(value)}")

    walk(document, 0)
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, dict):
        return "—"
    return str(value)


def _html(title: str, document: Any) -> str:
    def render(value: Any) -> str:
        if isinstance(value, dict):
            rows = "".join(f"<tr><th>{html.escape(_label(k))}</th><td>{render(v)}</td></tr>" for k, v in value.items())
            return f"<table>{rows}</table>"
        if isinstance(value, list):
            if not value:
                return "—"
            return "<ol>" + "".join(f"<li>{render(v)}</li>" for v in value) + "</ol>"
        return html.escape(_plain(value))

    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}th{text-align:left;"
            "vertical-align:top;padding-right:1em}td,th{border-bottom:1px solid #ddd}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{render(document)}</body></html>")


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _cursor_int(cursor: str | None, name: str) -> int:
    position = decode_cursor(cursor)
    if position is None:
        return 0
    value = position.get(name)
    if not isinstance(value, int) or value < 0:
        raise BadRequest("the cursor is not one this API issued")
    return value

