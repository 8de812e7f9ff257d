"""The audit API: what data-protection officers and auditors ask, and the public key that checks
the ledger's signatures.

Only auditors and DPOs may ask, only about their own trust, and every question is itself recorded
in the ledger (an AuditQueried fact, written in the same transaction that reads the answer: an
answer nobody could audit is an answer nobody gets).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator

from services.reporting.audit.deps import Audit
from services.reporting.audit.domain.canonical import instant
from services.reporting.audit.domain.facts import SHARE, Kind
from services.reporting.audit.proofs import proof_for
from services.reporting.audit.queries import (
    After,
    AgencyCategory,
    AuditEntry,
    EntryFilter,
    InvertedPeriod,
    LedgerRow,
    Period,
    PersonalDataReadRecord,
    ShareRecord,
    audit_entry,
    read_record,
    share_record,
)
from services.reporting.audit.signing import CheckpointSigner, load_signer
from services.reporting.audit.verification import WitnessCheck, report_json, verify_database
from services.reporting.audit.watch import trusted_keys, verification_outcome
from services.reporting.audit.witness import WitnessConflict, WitnessUnavailable, configured_witness, ledger_name
from shared.api import Cursor, Page, PageSize, caller, decode_cursor, encode_cursor
from shared.audit import record_audit_query
from shared.auth import Principal, Role
from shared.events.audit import CODE_PATTERN, IDENTIFIER_PATTERN
from shared.events.consent import LawfulBasis
from shared.problems import BadRequest, Conflict, Forbidden, NotFound
from shared.service import Runtime, dependencies_of, runtime_of

# The audit routes' dependencies are coroutines: FastAPI runs a plain function in a worker thread,
# and each such hop costs a request a thread wake-up and two GIL hand-overs (the token's
# verification, in `caller`, still takes one: it may fetch the identity provider's keys).
_AUDIT_ROLES = (Role.auditor, Role.dpo)
_WANTED = ", ".join(sorted(_AUDIT_ROLES))


async def auditor(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    """The caller, if an auditor or a DPO (403 otherwise): `shared.api.requires`, as a coroutine."""
    if not principal.has_role(*_AUDIT_ROLES):
        raise Forbidden(f"this requires one of the roles: {_WANTED}")
    return principal


async def running(request: Request) -> Runtime:
    return runtime_of(request)


Auditor = Annotated[Principal, Depends(auditor)]
RuntimeDep = Annotated[Runtime, Depends(running)]


async def audit_of(request: Request) -> Audit:
    """The reporting service's ledger, queries and audit settings, as its bootstrap built them."""
    return dependencies_of(request).audit  # type: ignore[no-any-return]


AuditDep = Annotated[Audit, Depends(audit_of)]


def _iso_day(value: Any) -> Any:
    # pydantic reads "0" or "1700000000" as a Unix time: an audit question about 1970 that the
    # asker never meant. A day is YYYY-MM-DD, nothing else.
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_iso_day)]
From = Annotated[Day | None, Query(alias="from", description="First day (UTC), included")]
To = Annotated[Day | None, Query(alias="to", description="Last day (UTC), included")]
StaffId = Annotated[str | None, Query(pattern=IDENTIFIER_PATTERN, description="A staff member's pseudonymous subject")]
BasisFilter = Annotated[LawfulBasis | None, Query(description="Only shares resting on this lawful basis")]
NoticeFilter = Annotated[bool | None, Query(
    description="true: only shares a delivered deletion notice covers; false: only shares none covers yet")]
ActionCode = Annotated[str | None, Query(pattern=CODE_PATTERN, description="An action, e.g. consent_withdrawn")]

_CSV_BATCH = 1000


class PublicKey(BaseModel):
    key_id: str
    algorithm: str
    pem: str
    jwk: dict[str, str]


class CheckpointRecord(BaseModel):
    seq: int
    entry_hash: str
    signed_at: str
    key_id: str
    statement: str
    signature: str


def audit_router() -> APIRouter:
    router = APIRouter(prefix="/audit", tags=["audit"])
    # One verification at a time per process: it reads and hashes the whole chain (a long one takes
    # a while), so a second click waits for nothing and a burst cannot pile reads on the database.
    verifying = asyncio.Lock()

    @router.get("/public-key", summary="The public key that checks the ledger's signed checkpoints")
    async def public_key(audit: AuditDep) -> PublicKey:
        return PublicKey(**_signer(audit).published())

    @router.get("/shares", response_model=Page[ShareRecord],
                summary="Who shared what with which agency, when, and the consent each share rested on")
    async def shares(
        principal: Auditor, runtime: RuntimeDep, audit: AuditDep, start: From = None, end: To = None,
        pupil_id: UUID | None = None, agency_id: UUID | None = None, agency_category: AgencyCategory | None = None,
        staff_id: StaffId = None, academy_id: UUID | None = None,
        include_blocked: bool = Query(False, description="Also list attempts that were blocked"),
        lawful_basis: BasisFilter = None, deletion_notice: NoticeFilter = None,
        limit: PageSize = 50, cursor: Cursor = None,
    ) -> Response:
        flt = EntryFilter(
            principal.trust_id, _period(start, end), _share_actions(include_blocked), pupil_id=pupil_id,
            agency_id=agency_id, agency_category=agency_category, staff_id=staff_id, academy_id=academy_id,
            lawful_basis=lawful_basis, deletion_notice=deletion_notice,
        )
        return await _page(runtime, principal, "shares", flt, cursor, limit, audit.queries.shares_page, share_record)

    @router.get("/shares.csv", responses=CSV_RESPONSE, summary="The same question as /audit/shares, every row, as CSV")
    async def shares_csv(
        principal: Auditor, runtime: RuntimeDep, audit: AuditDep, start: From = None, end: To = None,
        pupil_id: UUID | None = None, agency_id: UUID | None = None, agency_category: AgencyCategory | None = None,
        staff_id: StaffId = None, academy_id: UUID | None = None, include_blocked: bool = False,
        lawful_basis: BasisFilter = None, deletion_notice: NoticeFilter = None,
    ) -> StreamingResponse:
        flt = EntryFilter(
            principal.trust_id, _period(start, end), _share_actions(include_blocked), pupil_id=pupil_id,
            agency_id=agency_id, agency_category=agency_category, staff_id=staff_id, academy_id=academy_id,
            lawful_basis=lawful_basis, deletion_notice=deletion_notice,
        )
        return await _csv(runtime, audit, principal, "shares.csv", flt, audit.queries.shares_page, _share_csv_row, SHARE_COLUMNS)

    @router.get("/shares/{share_id}/proof", summary="Proof that a share's entry is as written: the chain to a signed checkpoint")
    async def share_proof(share_id: UUID, principal: Auditor, runtime: RuntimeDep, audit: AuditDep) -> dict[str, Any]:
        async with runtime.engine.connect() as conn:
            seq = await audit.queries.share_seq(conn, principal.trust_id, share_id)
        if seq is None:
            raise NotFound("no share with this id is in your trust's audit ledger")
        return await _proof(runtime, audit, principal, seq, {"share_id": str(share_id)})

    @router.get("/entries", response_model=Page[AuditEntry],
                summary="Audit entries by kind, action, pupil, agency, category, staff member or academy")
    async def entries(
        principal: Auditor, runtime: RuntimeDep, audit: AuditDep, start: From = None, end: To = None,
        kind: Kind | None = None, action: ActionCode = None,
        pupil_id: UUID | None = None, agency_id: UUID | None = None, agency_category: AgencyCategory | None = None,
        staff_id: StaffId = None, academy_id: UUID | None = None, share_id: UUID | None = None,
        consent_id: UUID | None = None, limit: PageSize = 50, cursor: Cursor = None,
    ) -> Response:
        flt = EntryFilter(
            principal.trust_id, _period(start, end), (action,) if action else (), kind=kind, pupil_id=pupil_id,
            agency_id=agency_id, agency_category=agency_category, staff_id=staff_id, academy_id=academy_id,
            share_id=share_id, consent_id=consent_id,
        )
        return await _page(runtime, principal, "entries", flt, cursor, limit, audit.queries.entries_page, audit_entry)

    @router.get("/entries.csv", responses=CSV_RESPONSE, summary="The same question as /audit/entries, every row, as CSV")
    async def entries_csv(
        principal: Auditor, runtime: RuntimeDep, audit: AuditDep, start: From = None, end: To = None,
        kind: Kind | None = None, action: ActionCode = None,
        pupil_id: UUID | None = None, agency_id: UUID | None = None, agency_category: AgencyCategory | None = None,
        staff_id: StaffId = None, academy_id: UUID | None = None, share_id: UUID | None = None,
        consent_id: UUID | None = None,
    ) -> StreamingResponse:
        flt = EntryFilter(
            principal.trust_id, _period(start, end), (action,) if action else (), kind=kind, pupil_id=pupil_id,
            agency_id=agency_id, agency_category=agency_category, staff_id=staff_id, academy_id=academy_id,
            share_id=share_id, consent_id=consent_id,
        )
        return await _csv(runtime, audit, principal, "entries.csv", flt, audit.queries.entries_page, _entry_csv_row,
                          ENTRY_COLUMNS)

    @router.get("/entries/{seq}/proof", summary="Proof that an entry is as written: the chain to a signed checkpoint")
    async def entry_proof(seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], principal: Auditor, runtime: RuntimeDep,
                          audit: AuditDep) -> dict[str, Any]:
        return await _proof(runtime, audit, principal, seq, {"seq": str(seq)})

    @router.get("/pupils/{pupil_id}/reads", response_model=Page[PersonalDataReadRecord],
                summary="Who read a pupil's record: when, which data, why")
    async def pupil_reads(
        pupil_id: UUID, principal: Auditor, runtime: RuntimeDep, audit: AuditDep, start: From = None, end: To = None,
        limit: PageSize = 50, cursor: Cursor = None,
    ) -> Response:
        flt = EntryFilter(principal.trust_id, _period(start, end), ("personal_data_read",), pupil_id=pupil_id)
        return await _page(runtime, principal, "pupil_reads", flt, cursor, limit, audit.queries.entries_page, read_record)

    @router.get("/checkpoints", summary="The signed checkpoints of your trust's chain, newest first")
    async def checkpoints(
        principal: Auditor, runtime: RuntimeDep, audit: AuditDep, limit: PageSize = 50, cursor: Cursor = None
    ) -> Page[CheckpointRecord]:
        before = _int_cursor(cursor)
        async with runtime.engine.begin() as conn:
            found = await audit.ledger.checkpoints_page(conn, principal.trust_id, before, limit + 1)
            await record_audit_query(conn, runtime.store, principal, "checkpoints", trust_id=principal.trust_id,
                                     result_count=min(len(found), limit))
        items = [CheckpointRecord(**{k: v for k, v in c.as_json().items() if k != "trust_id"}) for c in found]
        if len(items) > limit:
            items = items[:limit]
            return Page(items=items, next_cursor=encode_cursor({"before": items[-1].seq}))
        return Page(items=items)

    @router.get("/status", summary="Your trust's ledger now: its newest checkpoint and its age, whether the "
                                   "witness can be read, the last verification")
    async def status(principal: Auditor, runtime: RuntimeDep, audit: AuditDep) -> dict[str, Any]:
        async with runtime.engine.begin() as conn:
            newest = await audit.ledger.checkpoints_page(conn, principal.trust_id, None, 1)
            await record_audit_query(conn, runtime.store, principal, "status", trust_id=principal.trust_id,
                                     result_count=len(newest))
        witness = configured_witness(audit.settings, ledger_name(runtime.settings.database_url, audit.ledger.schema),
                                     create=True)
        try:
            witnessed = await witness.checkpoints(principal.trust_id)
            reachable, witness_problem = True, None
        except (WitnessUnavailable, WitnessConflict) as error:
            witnessed, reachable, witness_problem = [], False, type(error).__name__
        checkpoint = newest[0] if newest else None
        now = datetime.now(UTC)
        return {
            "trust_id": str(principal.trust_id),
            "last_checkpoint": None if checkpoint is None else {
                "seq": checkpoint.seq, "signed_at": instant(checkpoint.signed_at),
                "age_s": round((now - checkpoint.signed_at).total_seconds(), 1)},
            "checkpoint_every_s": audit.settings.checkpoint_every_s,
            "witness": {"name": witness.name, "reachable": reachable, "problem": witness_problem,
                        "last_witnessed_seq": max((c.seq for c in witnessed), default=None)},
            "last_verification": audit.verifications.get(principal.trust_id),
        }

    @router.post("/verification", summary="Verify your trust's chain now: every hash and link, every checkpoint's "
                                          "signature, against the witness (as `flourish audit verify --trust`, "
                                          "without the Kafka topic's cross-check)")
    async def verify_now(principal: Auditor, runtime: RuntimeDep, audit: AuditDep) -> dict[str, Any]:
        if verifying.locked():
            raise Conflict("a verification is running now: ask again when it has finished")
        async with verifying:
            return await _verify_now(principal, runtime, audit)

    async def _verify_now(principal: Principal, runtime: Runtime, audit: Audit) -> dict[str, Any]:
        name = ledger_name(runtime.settings.database_url, audit.ledger.schema)
        check = WitnessCheck(configured_witness(audit.settings, name, create=True),
                             unwitnessed_limit_s=audit.settings.checkpoint_every_s + audit.settings.unwitnessed_grace_s)
        result = await verify_database(runtime.settings.sync_database_url, audit.ledger.schema,
                                       trusted_keys(audit.settings), [principal.trust_id], witness=check,
                                       processes=False)
        outcome = verification_outcome(result, principal.trust_id, "asked")
        audit.verifications[principal.trust_id] = outcome
        async with runtime.engine.begin() as conn:
            await record_audit_query(conn, runtime.store, principal, "verification", trust_id=principal.trust_id,
                                     filters={"outcome": "intact" if outcome["ok"] else "failed"},
                                     result_count=outcome["entries"])
        return {**outcome, "chain": report_json(result.reports[0]) if result.reports else None}

    async def _proof(runtime: Runtime, audit: Audit, principal: Principal, seq: int, filters: dict[str, str]) -> dict[str, Any]:
        witness = configured_witness(audit.settings, ledger_name(runtime.settings.database_url, audit.ledger.schema),
                                     create=True)
        proof = await proof_for(runtime.engine, audit.ledger, _signer(audit), principal.trust_id, seq, witness)
        async with runtime.engine.begin() as conn:
            await record_audit_query(conn, runtime.store, principal, "proof", trust_id=principal.trust_id,
                                     filters=filters, result_count=1 + len(proof["chain"]))
        return proof

    return router


# --- Paging, CSV and the audit of every query ------------------------------------------------------

Fetch = Callable[[Any, EntryFilter, After | None, int], Any]


async def _page(
    runtime: Runtime, principal: Principal, query: str, flt: EntryFilter, cursor: str | None, limit: int,
    fetch: Fetch, shape: Callable[[LedgerRow], BaseModel],
) -> Response:
    after = _after(cursor)
    async with runtime.engine.begin() as conn:
        rows: list[LedgerRow] = await fetch(conn, flt, after, limit + 1)
        await record_audit_query(conn, runtime.store, principal, query, trust_id=principal.trust_id,
                                 filters=flt.described(), result_count=min(len(rows), limit))
    if len(rows) > limit:
        rows = rows[:limit]
        page: Page[Any] = Page(items=[shape(r) for r in rows],
                               next_cursor=encode_cursor(After(rows[-1].occurred_at, rows[-1].seq).cursor()))
    else:
        page = Page(items=[shape(r) for r in rows])
    # The page's models were validated as they were built: serialized once, straight to JSON (the
    # route's response_model documents it), rather than dumped, validated again and encoded.
    return Response(page.model_dump_json(), media_type="application/json")


async def _csv(
    runtime: Runtime, audit: Audit, principal: Principal, query: str, flt: EntryFilter, fetch: Fetch,
    to_row: Callable[[LedgerRow], list[Any]], columns: list[str],
) -> StreamingResponse:
    limit = audit.settings.csv_max_rows
    # The export is recorded before a byte of it leaves, and it is bounded.
    async with runtime.engine.begin() as conn:
        first: list[LedgerRow] = await fetch(conn, flt, None, _CSV_BATCH)
        await record_audit_query(conn, runtime.store, principal, query, trust_id=principal.trust_id,
                                 filters=flt.described())

    async def lines() -> AsyncIterator[str]:
        yield _csv_line(columns)
        rows, sent = first, 0
        while rows:
            for row in rows:
                if sent >= limit:
                    return
                yield _csv_line(to_row(row))
                sent += 1
            if len(rows) < _CSV_BATCH:
                return
            async with runtime.engine.connect() as conn:
                rows = await fetch(conn, flt, After(rows[-1].occurred_at, rows[-1].seq), _CSV_BATCH)

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="audit-{query}"'})


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The rows as CSV, a header line first", "content": {"text/csv": {"schema": {"type": "string"}}}},
}
MAX_SEQ = 2**63 - 1  # the ledger's seq is a bigint

SHARE_COLUMNS = [
    "seq", "entry_hash", "shared_at", "action", "share_id", "shared_by", "pupil_id", "academy_id", "agency_id",
    "agency_name", "agency_category", "document_kind", "document_id", "document_sha256", "reason", "lawful_basis",
    "consent_obtained", "policy_reference", "basis_id", "basis_stream_id", "record_version", "delivery_id",
    "consent_id", "consent_in_force", "deletion_notice", "deletion_notice_at", "deletion_notice_delivery_id",
    "consent_decisions", "outcomes",
]
ENTRY_COLUMNS = [
    "seq", "entry_hash", "occurred_at", "recorded_at", "kind", "action", "event_type", "event_id", "source", "actor",
    "academy_id", "pupil_id", "agency_id", "agency_category", "share_id", "consent_id", "purpose", "details",
]


def _share_csv_row(row: LedgerRow) -> list[Any]:
    record = share_record(row)
    decisions = "; ".join(f"{d.decision} {instant(d.decided_at)} (entry {d.seq})" for d in record.consent_decisions)
    outcomes = "; ".join(f"{o.action} {instant(o.occurred_at)} (entry {o.seq})" for o in record.outcomes)
    values = record.model_dump(mode="json")
    # The notice that settles it: the delivered one if any, else the last failed one.
    notice = next((n for n in record.deletion_notices if n.status == "delivered"),
                  record.deletion_notices[-1] if record.deletion_notices else None)
    values["deletion_notice_at"] = instant(notice.at) if notice else None
    values["deletion_notice_delivery_id"] = notice.delivery_id if notice else None
    return [*(values[c] for c in SHARE_COLUMNS[:-2]), decisions, outcomes]


def _entry_csv_row(row: LedgerRow) -> list[Any]:
    values = audit_entry(row).model_dump(mode="json")
    values["details"] = orjson.dumps(values["details"], option=orjson.OPT_SORT_KEYS).decode() if values["details"] else ""
    return [values.get(c) for c in ENTRY_COLUMNS]


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_cell(value) for value in values])
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    # A spreadsheet would run a cell starting with these as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --- Parameters -----------------------------------------------------------------------------------


def _period(start: date | None, end: date | None) -> Period:
    try:
        return Period(start, end)
    except InvertedPeriod as error:
        raise BadRequest(str(error)) from None


def _share_actions(include_blocked: bool) -> tuple[str, ...]:
    return (SHARE, "share_blocked") if include_blocked else (SHARE,)


def _after(cursor: str | None) -> After | None:
    try:
        return After.from_cursor(decode_cursor(cursor))
    except ValueError:
        raise BadRequest("the cursor is not one this API issued") from None


def _int_cursor(cursor: str | None) -> int | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    before = position.get("before")
    if not isinstance(before, int):
        raise BadRequest("the cursor is not one this API issued")
    return before


def _signer(audit: Audit) -> CheckpointSigner:
    return load_signer(audit.settings)
