"""The reporting service's part of a pupil's subject-access export (UK GDPR Art. 15): who the
pupil's data was shared with and who read their record, and the copies its read models keep.

- every share asked for (delivered, pending, failed or blocked): the recipient (agency name and
  category), when, by whom, the basis (consent, or the lawful basis and its policy reference, with
  the consent record it rested on), and what was sent (the document's kind and id, its SHA-256 as
  sent, and the document itself while the delivery still holds it);
- the deletion notices sent to agencies (Art. 19);
- who read the record: every PersonalDataRead fact the audit ledger holds for the pupil (who,
  when, which data, through which route, why if they said). The ledger is consumed from
  flourish.audit, so a read made a moment ago may not be listed yet;
- the read models' copy: scores over time, plans and sessions (the pupil's own rows only).

Asked by the consent service's `GET /pupils/{id}/subject-access` with the DPO's own token (only a
DPO may ask), scope-checked, and recorded in the audit ledger as a `subject_access_export` read
(the ledger question it asks is recorded as an audit query, as every ledger question is). Agencies
appear by organisation, never by a person; staff by their pseudonymous ids; the agencies' endpoints
and signing secrets are not the pupil's data and are left out.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting.audit.deps import Audit
from services.reporting.audit.queries import After, EntryFilter, read_record
from services.reporting.readmodels import queries as readmodels
from services.reporting.sharing.documents import DOCUMENT_FIELD
from services.reporting.sharing.tables import agencies, deliveries, shares
from shared.api import requires
from shared.audit import PersonalDataReads, ReadCategory, audit_reads, record_audit_query
from shared.auth import Principal, Role, ensure_scope
from shared.datakeys import DataKeyDestroyed
from shared.internal import INTERNAL
from shared.problems import NotFound
from shared.service import Runtime, current_runtime, dependencies_of

router = APIRouter(tags=["subject access"])

# The ledger's reads of one pupil, asked page by page; a bound keeps one export finite.
READS_PAGE = 500
MAX_READS = 20_000


async def _audit(request: Request) -> Audit:
    return dependencies_of(request).audit  # type: ignore[no-any-return]


@router.get("/pupils/{pupil_id}/subject-access", dependencies=[INTERNAL],
            summary="This service's part of a pupil's subject-access export (DPO only; consent gathers it)")
async def subject_access(
    pupil_id: UUID, runtime: Annotated[Runtime, Depends(current_runtime)], audit: Annotated[Audit, Depends(_audit)],
    principal: Annotated[Principal, Depends(requires(Role.dpo))],
    read: Annotated[PersonalDataReads, Depends(audit_reads)],
) -> JSONResponse:
    async with runtime.engine.begin() as conn:
        trust_id, academy_id = await _pupil_in_scope(conn, principal, pupil_id)
        reads, complete = await _reads(conn, audit, trust_id, pupil_id)
        await record_audit_query(conn, runtime.store, principal, "subject_access_reads", trust_id=trust_id,
                                 filters={"pupil_id": str(pupil_id)}, result_count=len(reads))
        section = {
            "status": "provided",
            "shares": await _shares(conn, runtime, pupil_id),
            "deletion_notices": await _notices(conn, runtime, pupil_id),
            "reads": reads,
            "reads_complete": complete,
            "read_models": await _read_models(conn, pupil_id),
            "redactions": ["agencies: the organisation and its category, never a person; their endpoints and "
                           "signing secrets are not the pupil's data",
                           "readers and sharers: pseudonymous staff ids, or the Flourish service that read"],
        }
        await read.record(conn, runtime.store, pupil_id=pupil_id, trust_id=trust_id, academy_id=academy_id,
                          data_categories=[ReadCategory.SUBJECT_ACCESS_EXPORT])
    # Personal data: no shared cache may keep a copy.
    return JSONResponse({"services": {"reporting": section}}, headers={"Cache-Control": "no-store"})


async def _pupil_in_scope(conn: AsyncConnection, principal: Principal, pupil_id: UUID) -> tuple[UUID, UUID]:
    """The pupil's trust and academy as the read models know them, or as a share recorded them;
    404 when reporting holds nothing on them in the caller's trust (row-level security hides
    every other trust's rows)."""
    row = await readmodels.pupil_row(conn, pupil_id)
    if row is None:
        row = (await conn.execute(select(shares.c.trust_id, shares.c.academy_id)
                                  .where(shares.c.pupil_id == pupil_id).limit(1))).first()
    if row is None:
        raise NotFound("the reporting service holds nothing on this pupil")
    ensure_scope(principal, row.trust_id, row.academy_id)
    return row.trust_id, row.academy_id


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def _events(conn: AsyncConnection, runtime: Runtime, stream: str) -> list[Any]:
    return [recorded.envelope.data for recorded in await runtime.store.read_stream(conn, stream)]


async def _frozen_document(runtime: Runtime, row: Any) -> Any:
    """A share's frozen document (sharing/documents.py), opened with the pupil's key, while kept."""
    if row.document_sealed is None or runtime.sealing is None:
        return None
    try:
        key = await runtime.sealing.keyring.key_for(row.trust_id, row.pupil_id)
    except DataKeyDestroyed:  # erased: nothing of theirs is kept to show
        return None
    return key.open_json(row.document_sealed, DOCUMENT_FIELD)


async def _shares(conn: AsyncConnection, runtime: Runtime, pupil_id: UUID) -> list[dict[str, Any]]:
    rows = (await conn.execute(
        select(shares, agencies.c.organisation, agencies.c.category)
        .join(agencies, agencies.c.agency_id == shares.c.agency_id)
        .where(shares.c.pupil_id == pupil_id).order_by(shares.c.shared_at, shares.c.share_id))).all()
    sent = {r.share_id: r for r in (await conn.execute(
        select(deliveries).where(deliveries.c.pupil_id == pupil_id, deliveries.c.kind == "share"))).all()}
    out = []
    for r in rows:
        decision = r.decision or {}
        recorded = {type(e).__name__: e for e in await _events(conn, runtime, f"share-{r.share_id}")}
        shared = recorded.get("ReportShared")
        delivery = sent.get(r.share_id)
        out.append({
            "share_id": str(r.share_id), "shared_at": r.shared_at.isoformat(), "shared_by": r.shared_by,
            "status": r.status, "reason": r.reason,
            "recipient": {"agency_id": str(r.agency_id), "agency_name": r.organisation, "category": r.category},
            "basis": {"lawful_basis": decision.get("lawful_basis"), "consent_obtained": decision.get("consent_obtained"),
                      "policy_reference": decision.get("policy_reference"), "record": decision.get("record"),
                      "decided_at": decision.get("decided_at")},
            "what_was_sent": {
                "document_kind": r.document_kind, "document_id": str(r.document_id) if r.document_id else None,
                "document_sha256": getattr(shared, "document_sha256", None),
                # Kept (sealed) only until it is delivered (or stopped): after that, the hash says what it was.
                "document": await _frozen_document(runtime, r),
            },
            "delivery": None if delivery is None else {
                "status": delivery.status, "attempts": delivery.attempts, "created_at": _iso(delivery.created_at),
                "finished_at": _iso(delivery.finished_at)},
        })
    return out


async def _notices(conn: AsyncConnection, runtime: Runtime, pupil_id: UUID) -> list[dict[str, Any]]:
    rows = (await conn.execute(
        select(deliveries, agencies.c.organisation)
        .join(agencies, agencies.c.agency_id == deliveries.c.agency_id)
        .where(deliveries.c.pupil_id == pupil_id, deliveries.c.kind == "deletion_notice")
        .order_by(deliveries.c.created_at, deliveries.c.delivery_id))).all()
    out = []
    for r in rows:
        payload = r.payload if isinstance(r.payload, dict) else {}
        covered = payload.get("share_ids")
        if covered is None:  # the payload is dropped once delivered: the outcome event names the shares
            for event in await _events(conn, runtime, f"deletion-notice-{r.delivery_id}"):
                if getattr(event, "share_ids", None):
                    covered = sorted(str(s) for s in event.share_ids)
        out.append({"delivery_id": str(r.delivery_id),
                    "recipient": {"agency_id": str(r.agency_id), "agency_name": r.organisation,
                                  "category": r.agency_category},
                    "reason": payload.get("reason"), "shares": covered or [], "status": r.status,
                    "created_at": _iso(r.created_at), "finished_at": _iso(r.finished_at)})
    return out


async def _reads(conn: AsyncConnection, audit: Audit, trust_id: UUID, pupil_id: UUID) -> tuple[list[dict[str, Any]], bool]:
    flt = EntryFilter(trust_id, actions=("personal_data_read",), pupil_id=pupil_id)
    found: list[dict[str, Any]] = []
    after: After | None = None
    while len(found) < MAX_READS:
        rows = await audit.queries.entries_page(conn, flt, after, READS_PAGE)
        for row in rows:
            record = read_record(row)
            found.append({"read_at": record.read_at.isoformat(), "reader": record.reader,
                          "service": record.service, "route": record.route,
                          "data_categories": record.data_categories, "reason": record.reason,
                          "ledger_seq": record.seq})
        if len(rows) < READS_PAGE:
            return found, True
        after = After(rows[-1].occurred_at, rows[-1].seq)
    return found[:MAX_READS], False


async def _read_models(conn: AsyncConnection, pupil_id: UUID) -> dict[str, Any] | None:
    if await readmodels.pupil_row(conn, pupil_id) is None:
        return None
    profile = await readmodels.pupil_profile(conn, pupil_id)
    return _plain(profile)


def _plain(value: Any) -> Any:
    """Ids and dates as text, so the section is plain JSON however it is sent."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
