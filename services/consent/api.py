"""The consent service's HTTP API: parse, authorise, call a handler, shape the response.

Roles: senco (the academy's senior staff: SENCo, designated safeguarding lead, head) and dpo
record consent and lawful bases; trust_admin and dpo set retention policies; only the dpo erases
and exports; only the Flourish services that seal pupils' data (role `service`, by client) get data
keys. Routes marked INTERNAL (shared/internal.py) answer only on the cluster network. Staff reach pupils of their
own academies; trust roles reach their trust; nobody reaches another trust.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from services.consent import handlers, opt_out, queries, receipts, rendering
from services.consent import scheduler as retention
from services.consent import subject_access as exports
from services.consent.domain.retention import RetentionPeriod
from services.consent.handlers import ConsentDeps, GivenBy
from services.consent.projections import record_from_row
from services.consent.schemas import (
    ConsentDecisionIn,
    ErasureIn,
    FamilyContactIn,
    LawfulBasisIn,
    OptOutRetentionIn,
    RetentionClockIn,
    RetentionPolicyIn,
    WithdrawalIn,
    decision_summary,
    iso,
    purpose_status,
)
from services.consent.tables import kernel
from shared.api import Cursor, PageSize, decode_cursor, encode_cursor, requires, transact
from shared.audit import PersonalDataReads, ReadCategory, audit_reads
from shared.auth import Principal, Role
from shared.datakeys import ALGORITHM, DataKeyDestroyed, UnknownDataKey
from shared.events.consent import AgencyCategory, DataCategory, DataKind, ErasureReason, Purpose
from shared.internal import INTERNAL, service_client
from shared.problems import BadRequest, Forbidden, Gone
from shared.service import Runtime, current_runtime, dependencies_of
from shared.tenancy import across_trusts
from shared.verified_tokens import requires_cached

router = APIRouter(tags=["consent"])

RECORDERS = (Role.senco, Role.dpo)
READERS = (Role.senco, Role.practitioner, Role.dpo, Role.auditor)
DECIDERS = (Role.service, Role.senco, Role.practitioner, Role.dpo)
POLICY_SETTERS = (Role.trust_admin, Role.dpo)
POLICY_READERS = (Role.trust_admin, Role.dpo, Role.senco, Role.auditor)
CLOCK_KEEPERS = (Role.service, Role.senco, Role.dpo)
# The service clients that get a pupil's data key, and the family's sealed contact (ConsentSettings).
DATA_KEY_CLIENT = service_client(lambda request: dependencies_of(request).settings.consent.data_key_clients)
FAMILY_CONTACT_CLIENT = service_client(lambda request: dependencies_of(request).settings.consent.family_contact_clients)


async def deps_of(request: Request) -> ConsentDeps:
    return dependencies_of(request).handlers  # type: ignore[no-any-return]


Deps = Annotated[ConsentDeps, Depends(deps_of)]
RuntimeDep = Annotated[Runtime, Depends(current_runtime)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                              description="Retry safely: the first response is returned, nothing happens twice.")]


# --- Consent decisions --------------------------------------------------------------------------


@router.post("/pupils/{pupil_id}/consents", status_code=201, summary="Record a parent's or carer's consent decision")
async def record_consent(
    pupil_id: UUID, body: ConsentDecisionIn, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*RECORDERS))], idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    async def command(conn: Any) -> tuple[int, Any]:
        result = await handlers.record_decision(
            conn, deps, principal, pupil_id, purpose=body.purpose, granted=body.decision == "granted",
            given_by=GivenBy(body.given_by.name, body.given_by.relationship, body.given_by.email), method=body.method,
            evidence_reference=body.evidence_reference, decided_at=body.decided_at, valid_until=body.valid_until,
            covers=frozenset(body.covers) if body.covers is not None else None,
        )
        return 201, result.body()

    return await transact(runtime.engine, kernel.idempotency, principal, idempotency_key,
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
            given_by=GivenBy(body.given_by.name, body.given_by.relationship, body.given_by.email), method=body.method,
            evidence_reference=body.evidence_reference, withdrawn_at=body.withdrawn_at,
        )
        return 201, result.body()

    return await transact(runtime.engine, kernel.idempotency, principal, idempotency_key,
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

    return await transact(runtime.engine, kernel.idempotency, principal, idempotency_key,
                          {"pupil_id": str(pupil_id), **body.model_dump(mode="json")}, command)


@router.get("/pupils/{pupil_id}/consents", summary="Where each purpose stands for a pupil now")
async def consent_status(
    pupil_id: UUID, runtime: RuntimeDep, deps: Deps, principal: Annotated[Principal, Depends(requires(*READERS))],
) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        pupil = await handlers.pupil_in_scope(conn, principal, pupil_id)
        rows = await queries.consent_records_of(conn, pupil_id)
    now = deps.clock()
    purposes = [purpose_status(purpose, record_from_row(rows.get(purpose.value), pupil_id, purpose), now)
                for purpose in Purpose]
    return {"pupil_id": str(pupil_id), "academy_id": str(pupil.academy_id), "purposes": purposes}


@router.get("/pupils/{pupil_id}/consents/history", summary="Every decision on the pupil's record, oldest first")
async def consent_history(
    pupil_id: UUID, runtime: RuntimeDep, principal: Annotated[Principal, Depends(requires(*READERS))],
    limit: PageSize = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    after = _cursor_int(cursor, "seq")
    async with runtime.engine.connect() as conn:
        await handlers.pupil_in_scope(conn, principal, pupil_id, allow_erased=True)
        rows = await queries.decisions_after(conn, pupil_id, after, limit + 1)
    items = [decision_summary(r) for r in rows[:limit]]
    next_cursor = encode_cursor({"seq": rows[limit - 1].seq}) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


@router.get("/consent-decisions/{decision_id}/receipt",
            summary="The family's receipt for one decision: JSON, or readable (format=text|html or Accept)")
async def receipt(
    decision_id: UUID, request: Request, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*RECORDERS))],
    read: Annotated[PersonalDataReads, Depends(audit_reads)],
    format: Literal["json", "text", "html"] | None = None,
) -> Response:
    async with runtime.engine.begin() as conn:
        row = await queries.decision_row(conn, decision_id)
        if row is None:
            raise handlers.UnknownPupil("no such consent decision")
        pupil = await handlers.pupil_in_scope(conn, principal, row.pupil_id, allow_erased=True)
        if pupil.erased_at is not None:
            raise Gone("the pupil was erased; the receipt's personal data no longer exists")
        # The receipt names the parent or carer: the read is audited in the same transaction.
        await read.record(conn, runtime.store, pupil_id=pupil.pupil_id, trust_id=pupil.trust_id,
                          academy_id=pupil.academy_id, data_categories=[ReadCategory.CONSENT_RECEIPT])
        key = await deps.vault.key_for(conn, pupil.trust_id, pupil.pupil_id, create=False)
    return rendering.document_response("Consent receipt", receipts.receipt(row, pupil, key),
                                       format or rendering.negotiate(request))


# --- The family's contact: where they are told before a share (docs/sharing.md) -----------------


@router.put("/pupils/{pupil_id}/family-contact",
            summary="Record or change the parent's or carer's contact email (sealed), where notices of shares go")
async def set_family_contact(
    pupil_id: UUID, body: FamilyContactIn, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(*RECORDERS))],
) -> dict[str, Any]:
    async with runtime.engine.begin() as conn:
        return await handlers.set_family_contact(conn, deps, principal, pupil_id, body.email)


@router.delete("/pupils/{pupil_id}/family-contact", status_code=204,
               summary="Forget the family's contact email: notices of shares become printable letters only")
async def remove_family_contact(
    pupil_id: UUID, runtime: RuntimeDep, principal: Annotated[Principal, Depends(requires(*RECORDERS))],
) -> Response:
    async with runtime.engine.begin() as conn:
        await handlers.remove_family_contact(conn, principal, pupil_id)
    return Response(status_code=204)


@router.get("/pupils/{pupil_id}/family-contact", dependencies=[INTERNAL],
            summary="The family's contact email, sealed with the pupil's key, for the notice sender only (internal)")
async def family_contact(
    pupil_id: UUID, runtime: RuntimeDep, principal: Annotated[Principal, Depends(FAMILY_CONTACT_CLIENT)],
) -> JSONResponse:
    async with runtime.engine.connect() as conn:
        body = await handlers.family_contact(conn, principal, pupil_id)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


# --- Opt-out of the online tool: what was held --------------------------------------------------


@router.post("/pupils/{pupil_id}/opt-out/retention", status_code=201,
             summary="Keep what was held on a child whose family opted out of the online tool (DPO, within the period)")
async def keep_opted_out_data(
    pupil_id: UUID, body: OptOutRetentionIn, request: Request, runtime: RuntimeDep, deps: Deps,
    principal: Annotated[Principal, Depends(requires(Role.dpo))], idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    grace_days = dependencies_of(request).settings.consent.opt_out_grace_days

    async def command(conn: Any) -> tuple[int, Any]:
        return 201, await opt_out.keep_held_data(conn, deps, principal, pupil_id, basis=body.retention_basis,
                                                 explanation=body.explanation, grace_days=grace_days)

    return await transact(runtime.engine, kernel.idempotency, principal, idempotency_key,
                          {"pupil_id": str(pupil_id), **body.model_dump(mode="json")}, command)


@router.get("/pupils/{pupil_id}/opt-out", summary="The opt-out of the online tool in force: when what was held goes")
async def opted_out(
    pupil_id: UUID, request: Request, runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(requires(*READERS))],
) -> dict[str, Any]:
    grace_days = dependencies_of(request).settings.consent.opt_out_grace_days
    async with runtime.engine.connect() as conn:
        await handlers.pupil_in_scope(conn, principal, pupil_id)
        status = await opt_out.status_of(conn, pupil_id, grace_days)
    return {"pupil_id": str(pupil_id), "opted_out": status is not None, "opt_out": status,
            "grace_period_days": grace_days}


# --- May this be shared now? --------------------------------------------------------------------


@router.get("/sharing-decisions", dependencies=[INTERNAL],
            summary="May this academy share this kind of data about this pupil with this agency category now?")
async def sharing_decision(
    request: Request, principal: Annotated[Principal, Depends(requires_cached(*DECIDERS))],
    pupil_id: UUID, agency_category: AgencyCategory, data_kind: DataKind,
) -> Response:
    now = dependencies_of(request).handlers.clock()
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
        "policy_reference": decision.policy_reference,
        "record": {"stream_id": handlers.record_stream(pupil_id, purpose), "version": decision.record_version,
                   "decision_id": str(decision.record_id) if decision.record_id else None},
        "valid_until": iso(decision.valid_until),
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

    return await transact(runtime.engine, kernel.idempotency, principal, idempotency_key,
                          {"academy_id": str(academy_id), "data_category": data_category.value,
                           **body.model_dump(mode="json")}, command)


@router.get("/academies/{academy_id}/retention-policies",
            summary="The academy's effective retention policies (defaults included)")
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


@router.put("/pupils/{pupil_id}/retention-clock", dependencies=[INTERNAL],
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


@router.get("/pupils/{pupil_id}/data-key", dependencies=[INTERNAL],
            summary="The pupil's data key, for the services that seal their data only (internal; 410 after erasure)")
async def data_key(
    pupil_id: UUID, runtime: RuntimeDep, deps: Deps, principal: Annotated[Principal, Depends(DATA_KEY_CLIENT)],
    read: Annotated[PersonalDataReads, Depends(audit_reads)],
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
        # Every release of a key is audited (which service, which pupil), in the same transaction.
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=key.trust_id,
                          academy_id=pupil.academy_id if pupil is not None else None,
                          data_categories=[ReadCategory.DATA_KEY])
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

    return await transact(runtime.engine, kernel.idempotency, principal, idempotency_key,
                          {"pupil_id": str(pupil_id), "reason": reason.value}, command)


@router.get("/pupils/{pupil_id}/erasure", summary="The non-personal record that a pupil was erased")
async def erasure_record(
    pupil_id: UUID, runtime: RuntimeDep,
    principal: Annotated[Principal, Depends(requires(Role.dpo, Role.auditor, Role.trust_admin))],
) -> dict[str, Any]:
    async with runtime.engine.connect() as conn:
        row = await queries.erasure_row(conn, pupil_id)
        if row is None:
            await handlers.pupil_in_scope(conn, principal, pupil_id)  # 404 / 403 as usual
            raise handlers.UnknownPupil("the pupil has not been erased")
        key_row = await queries.data_key_row(conn, pupil_id)
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
                          academy_id=pupil.academy_id, data_categories=[ReadCategory.SUBJECT_ACCESS_EXPORT])
        document = await exports.export(conn, deps, pupil)
    consent = dependencies_of(request)
    sections = await exports.peer_sections(consent.subject_access_peers, request.headers.get("authorization", ""),
                                           pupil_id, consent.subject_access_transports) if include_services else {}
    exports.add_peer_sections(document, sections, asked=include_services)
    return exports.response(document, format or rendering.negotiate(request))


# --- Helpers ------------------------------------------------------------------------------------


def _cursor_int(cursor: str | None, name: str) -> int:
    position = decode_cursor(cursor)
    if position is None:
        return 0
    value = position.get(name)
    if not isinstance(value, int) or value < 0:
        raise BadRequest("the cursor is not one this API issued")
    return value

