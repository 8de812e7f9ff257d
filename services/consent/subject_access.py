"""A pupil's subject-access export (UK GDPR Art. 15): everything the consent service holds on
them, opened with their data key, and each other service's own part (assessment, planning,
reporting: FLOURISH_CONSENT_SUBJECT_ACCESS_PEERS), gathered over HTTP in the same call.

The peers are asked with the DPO's own token, so the export grants no new privilege: a service
that refuses the DPO, fails or cannot be reached is named in the export with what happened
instead, and the export says it is incomplete; a part is never silently missing. The HTML form
is templates/subject_access.html (autoescaped: every value is text, never markup).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from uuid import UUID

import httpx
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncConnection

from services.consent import handlers, queries, rendering
from services.consent.domain.retention import PupilClock, due
from services.consent.handlers import ConsentDeps, Pupil
from services.consent.projections import record_from_row
from services.consent.schemas import decision_summary, iso, purpose_status
from shared.datakeys import ALGORITHM
from shared.events.consent import Purpose

EXPORT_VERSION = "flourish-subject-access/2"
PEER_TIMEOUT_S = 10.0
TITLE = "Subject access export"
# The services that hold a part of every pupil's data besides consent.
PEERS = ("assessment", "planning", "reporting")
# What each service's part holds, as the HTML page titles it (unknown names get their own name).
SECTION_TITLES = {
    "consent": "Consent: consent decisions, lawful bases, retention",
    "assessment": "Assessment: roster record, groups, observations and notes, assessments and scores",
    "planning": "Planning: plans, sessions and session notes",
    "reporting": "Reporting: shares with agencies, deletion notices, who read the record",
}


async def export(conn: AsyncConnection, deps: ConsentDeps, pupil: Pupil) -> dict[str, Any]:
    """The export with this service's section; the caller has checked scope and audited the read."""
    section = await consent_section(conn, deps, pupil)
    return {
        "export_version": EXPORT_VERSION,
        "pupil_id": str(pupil.pupil_id),
        "generated_at": deps.clock().isoformat(),
        "complete": True,
        "missing_parts": [],
        "services": {"consent": section},
    }


def add_peer_sections(document: dict[str, Any], sections: Mapping[str, Any], *, asked: bool = True) -> dict[str, Any]:
    """The peers' parts added; a part that was not provided makes the export say it is incomplete.
    A service that holds a part but is not configured as a peer is named too (`not_configured`;
    `not_asked` when the caller asked for consent's part alone), never silently left out."""
    absent = {"status": "not_configured" if asked else "not_asked"}
    sections = {**{name: dict(absent) for name in PEERS if name not in sections}, **sections}
    document["services"].update(sorted(sections.items()))
    missing = sorted(name for name, part in sections.items() if part.get("status") != "provided")
    document["missing_parts"] = missing
    document["complete"] = not missing
    return document


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
    records = await queries.consent_records_of(conn, pupil.pupil_id)
    now = deps.clock()
    current = [purpose_status(purpose, record_from_row(records.get(purpose.value), pupil.pupil_id, purpose), now)
               for purpose in Purpose]
    clock = PupilClock(pupil.pupil_id, row.left_on, date.fromisoformat(dob) if dob else None, row.last_activity_on,
                       row.case_closed_on)
    retention = []
    for policy in await handlers.academy_policies(conn, pupil.trust_id, row.academy_id):
        due_on = due(policy, clock)
        retention.append({**handlers.policy_body(policy, row.academy_id),
                          "due_on": due_on.isoformat() if due_on else None})
    return {
        "status": "provided",
        "roster": {"academy_id": str(row.academy_id), "enrolled_on": iso(row.enrolled_on), "left_on": iso(row.left_on),
                   "last_activity_on": iso(row.last_activity_on), "case_closed_on": iso(row.case_closed_on),
                   "date_of_birth": dob},
        "consent_now": current,
        "consent_decisions": decisions,
        "retention": retention,
        "retention_expired": expired,
        "data_key": {"exists": True, "algorithm": ALGORITHM, "note": "the key itself is never exported"},
    }


async def peer_sections(peers: Mapping[str, str], authorization: str, pupil_id: UUID,
                        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> dict[str, Any]:
    """Each configured service's own part ({name: base URL}), asked with the caller's
    `Authorization` header as it came (no new privilege); `transports`: how a peer is reached
    (tests: ASGI transports; by default the network). A part that is not a 200 is named with
    what happened: the HTTP status and the problem's title and detail (ids and codes only)."""
    sections: dict[str, Any] = {}
    for name, base_url in sorted(peers.items()):
        transport = (transports or {}).get(name)
        async with httpx.AsyncClient(timeout=PEER_TIMEOUT_S, transport=transport) as client:
            try:
                response = await client.get(f"{base_url.rstrip('/')}/pupils/{pupil_id}/subject-access",
                                            params={"include_services": "false"},
                                            headers={"Authorization": authorization})
            except httpx.HTTPError as error:
                sections[name] = {"status": "unreachable", "error_type": type(error).__name__}
                continue
        sections[name] = _part(name, response)
    return sections


def _part(name: str, response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code == 200:
        part = payload.get("services", {}).get(name, payload) if isinstance(payload, dict) else None
        if isinstance(part, dict):
            return {"status": "provided", **part}
        return {"status": "invalid_response", "http_status": 200}
    problem = payload if isinstance(payload, dict) else {}
    return {"status": "not_provided", "http_status": response.status_code,
            "title": str(problem.get("title", ""))[:200] or None, "detail": str(problem.get("detail", ""))[:300] or None}


def response(document: dict[str, Any], chosen: rendering.Format) -> Response:
    """JSON or text as every document; HTML through templates/subject_access.html."""
    if chosen != "html":
        return rendering.document_response(TITLE, document, chosen)
    sections = [{"name": name, "title": SECTION_TITLES.get(name, name), "part": part}
                for name, part in document["services"].items()]
    return rendering.html_response("subject_access.html", title=TITLE, document=document, sections=sections)
