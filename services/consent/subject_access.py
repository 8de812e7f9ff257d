"""A pupil's subject-access export: everything the consent service holds on them, opened with
their data key, and (when configured) each other service's own export, gathered over HTTP.

The peers are asked with the DPO's own token, so the export grants no new privilege: a service
that refuses the DPO, or cannot be reached, is named in the export with what happened instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from services.consent import handlers, queries
from services.consent.handlers import ConsentDeps, Pupil
from services.consent.schemas import decision_summary, iso
from shared.datakeys import ALGORITHM

EXPORT_VERSION = "flourish-subject-access/1"
PEER_TIMEOUT_S = 10.0


async def export(conn: AsyncConnection, deps: ConsentDeps, pupil: Pupil) -> dict[str, Any]:
    """The export with this service's section; the caller has checked scope and audited the read."""
    section = await consent_section(conn, deps, pupil)
    return {
        "export_version": EXPORT_VERSION,
        "pupil_id": str(pupil.pupil_id),
        "generated_at": deps.clock().isoformat(),
        "services": {"consent": section},
    }


async def consent_section(conn: AsyncConnection, deps: ConsentDeps, pupil: Pupil) -> dict[str, Any]:
    """The roster record, every decision with its sealed fields opened, what retention removed."""
    row = await queries.roster_row(conn, pupil.pupil_id)
    key = await deps.vault.key_for(conn, pupil.trust_id, pupil.pupil_id)
    dob = key.open_text(row.date_of_birth_sealed, handlers.DATE_OF_BIRTH) if row.date_of_birth_sealed else None
    decisions = []
    for d in await queries.all_decisions(conn, pupil.pupil_id):
        entry = decision_summary(d)
        entry["given_by"] = key.open_json(d.given_by_sealed, handlers.GIVEN_BY) if d.given_by_sealed else None
        entry["evidence_reference"] = key.open_text(d.evidence_sealed, handlers.EVIDENCE) if d.evidence_sealed else None
        entry["reason"] = key.open_text(d.reason_sealed, handlers.REASON) if d.reason_sealed else None
        decisions.append(entry)
    expired = [{"data_category": e.data_category, "due_on": e.due_on.isoformat(), "expired_at": iso(e.expired_at)}
               for e in await queries.retention_expiries_of(conn, pupil.pupil_id)]
    return {
        "roster": {"academy_id": str(row.academy_id), "enrolled_on": iso(row.enrolled_on), "left_on": iso(row.left_on),
                   "last_activity_on": iso(row.last_activity_on), "case_closed_on": iso(row.case_closed_on),
                   "date_of_birth": dob},
        "consent_decisions": decisions,
        "retention_expired": expired,
        "data_key": {"exists": True, "algorithm": ALGORITHM, "note": "the key itself is never exported"},
    }


async def peer_sections(peers: Mapping[str, str], authorization: str, pupil_id: UUID) -> dict[str, Any]:
    """Each configured service's own export ({name: base URL}), asked with the caller's
    `Authorization` header as it came (no new privilege)."""
    sections: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=PEER_TIMEOUT_S) as client:
        for name, base_url in sorted(peers.items()):
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
