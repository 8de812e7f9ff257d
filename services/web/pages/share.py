"""Consent and sharing (issue 19, item 4): a child's consent decisions — record a parent's or carer's
decision or withdrawal, print its receipt, read the history — and sharing a document with an
agency: the consent decision shown before sending, the delivery status after, the family's notice.

Every figure on these pages is the APIs' own: the consent service's status, history and receipt;
the reporting service's agencies, shares, deliveries and notices. The web decides nothing: a page a
user's roles do not reach shows the API's 403 as "You do not have access"."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.web.api import ApiError
from services.web.core import CheckedForm, Page, SignedIn, render, web_of
from services.web.session import Session

router = APIRouter()

# What each purpose means, in the words the receipt uses (services/consent/receipts.py).
PURPOSES: dict[str, str] = {
    "interventions": "Taking part in Thrive sessions (opt-out)",
    "online_processing": "Processing by the online Thrive tool (opt-out)",
    "share_speech_and_language": "Sharing with speech and language therapy",
    "share_camhs": "Sharing with CAMHS",
    "share_social_care": "Sharing with social care",
    "share_educational_psychology": "Sharing with educational psychology",
    "share_local_authority": "Sharing with the local authority",
    "share_other": "Sharing with another named provider",
}
AGENCY_CATEGORIES: dict[str, str] = {
    "speech_and_language": "Speech and language therapy", "camhs": "CAMHS", "social_care": "Social care",
    "educational_psychology": "Educational psychology", "local_authority": "Local authority", "other": "Other provider",
}
METHODS: dict[str, str] = {"paper": "Paper form", "email": "Email", "verbal": "Verbally (in person or by phone)",
                           "portal": "Parent portal"}
DECISIONS: dict[str, str] = {"granted": "Gives consent", "refused": "Refuses consent",
                             "withdrawn": "Withdraws consent given before"}
STATUS_TEXT: dict[str, str] = {"none": "No decision recorded", "granted": "Granted", "refused": "Refused",
                               "withdrawn": "Withdrawn"}
DOCUMENT_KINDS: dict[str, str] = {"report": "Intervention report", "profile": "Thrive profile",
                                  "action_plan": "Action plan"}
# The consent service's reasons (its DenyReason and allow reasons), as a SENCo reads them.
REASONS: dict[str, str] = {
    "no_record": "no consent has been recorded for sharing with this kind of agency",
    "consent_refused": "the parent or carer refused consent for sharing with this kind of agency",
    "consent_withdrawn": "the parent or carer withdrew their consent for sharing with this kind of agency",
    "consent_expired": "the consent given has expired",
    "kind_of_data_not_covered": "the consent given does not cover this kind of document",
    "pupil_erased": "the child's record was erased",
    "consent_in_force": "the parent's or carer's consent, in force",
    "public_task_in_force": "a lawful basis other than consent (public task), in force",
    "legal_obligation_in_force": "a lawful basis other than consent (legal obligation), in force",
    "vital_interests_in_force": "a lawful basis other than consent (vital interests), in force",
}
# Where a webhook delivery stands (the reporting service's sharing_deliveries.status).
DELIVERY_TEXT: dict[str, tuple[str, str]] = {
    "delivered": ("Delivered", "govuk-tag--green"),
    "pending": ("Sending", "govuk-tag--blue"),
    "retrying": ("Retrying", "govuk-tag--yellow"),
    "failed": ("Not delivered (dead-lettered)", "govuk-tag--red"),
    "blocked": ("Stopped", "govuk-tag--red"),
    "undeliverable": ("Undeliverable", "govuk-tag--red"),
}
RECORDERS = ("senco", "dpo")
SHARERS = ("senco", "dpo", "trust_admin")


def reason_text(code: str | None) -> str:
    return REASONS.get(code or "", code or "no reason given")


async def pupil_name(request: Request, session: Session, pupil_id: UUID) -> str:
    """The child's name for the heading when the user may read it (the assessment API decides and
    audits the read); otherwise "this child"."""
    try:
        record = await web_of(request).api.get(session, "assessment", f"/pupils/{pupil_id}")
    except ApiError as exc:
        if exc.status in (401, 404):
            raise
        return "this child"
    name = " ".join(part for part in (record.get("preferred_forename") or record.get("legal_forename"),
                                      record.get("legal_surname")) if part)
    return name or "this child"


# --- A child's consent --------------------------------------------------------------------------


async def consent_context(request: Request, session: Session, pupil_id: UUID) -> dict[str, Any]:
    api = web_of(request).api
    status = await api.get(session, "consent", f"/pupils/{pupil_id}/consents")
    history = await api.get(session, "consent", f"/pupils/{pupil_id}/consents/history", params={"limit": 100})
    return {"pupil_id": pupil_id, "name": await pupil_name(request, session, pupil_id),
            "purposes": [{**item, "allowed_kinds": [DOCUMENT_KINDS.get(kind, kind) for kind, allowed in
                                                     sorted(item.get("sharing_allowed", {}).items()) if allowed]}
                         for item in status["purposes"]],
            "history": list(reversed(history["items"])),
            "purpose_text": PURPOSES, "status_text": STATUS_TEXT, "methods": METHODS, "decisions": DECISIONS,
            "may_record": session.has_role(*RECORDERS), "may_share": session.has_role(*SHARERS),
            "today": date.today(), "rendered_at": datetime.now(UTC).isoformat()}


@router.get("/pupils/{pupil_id}/consent", response_class=HTMLResponse)
async def consent_page(request: Request, session: SignedIn, pupil_id: UUID) -> HTMLResponse:
    context = await consent_context(request, session, pupil_id)
    return render(request, "share/consent.html", {**context, "values": {}})


def _decided_at(form: FormData) -> tuple[datetime | None, str | None]:
    """The date the family told the school (day, month, year). Today: the moment the form was
    rendered (its hidden `rendered_at`), so a double submit sends the API the same command under
    the same Idempotency-Key; another day: noon UTC."""
    try:
        day = date(int(str(form.get("decided_year", ""))), int(str(form.get("decided_month", ""))),
                   int(str(form.get("decided_day", ""))))
    except ValueError:
        return None, "Date of the decision: enter a real date, for example 27 3 2026"
    if day > date.today():
        return None, "Date of the decision: it must be today or in the past"
    if day == date.today():
        now = datetime.now(UTC)
        try:
            rendered = datetime.fromisoformat(str(form.get("rendered_at", "")))
        except ValueError:
            return now, None
        if rendered.tzinfo is None or rendered > now or rendered.date() != day:
            return now, None
        return rendered, None
    return datetime.combine(day, time(12, 0), tzinfo=UTC), None


@router.post("/pupils/{pupil_id}/consent", response_class=HTMLResponse)
async def record_decision(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID) -> Response:
    values = {k: str(v) for k, v in form.items() if k not in ("csrf_token", "idempotency_key")}
    purpose, decision = values.get("purpose", ""), values.get("decision", "")
    errors: list[str] = []
    if purpose not in PURPOSES:
        errors.append("Purpose: choose what the decision is about")
    if decision not in DECISIONS:
        errors.append("Decision: choose whether the parent or carer gives, refuses or withdraws consent")
    decided_at, date_error = _decided_at(form)
    if date_error:
        errors.append(date_error)
    if not errors:
        given_by = {"name": values.get("given_by_name", ""), "relationship": values.get("given_by_relationship", "")}
        body: dict[str, Any] = {"given_by": given_by, "method": values.get("method", ""),
                                "evidence_reference": values.get("evidence_reference") or None}
        assert decided_at is not None
        try:
            if decision == "withdrawn":
                path = f"/pupils/{pupil_id}/consents/{purpose}/withdrawal"
                body["withdrawn_at"] = decided_at.isoformat()
            else:
                path = f"/pupils/{pupil_id}/consents"
                body.update(purpose=purpose, decision=decision, decided_at=decided_at.isoformat())
            recorded = await web_of(request).api.post(session, "consent", path, json=body,
                                                      idempotency_key=str(form["idempotency_key"]))
        except ApiError as exc:
            if exc.status not in (400, 409, 422):
                raise
            errors = exc.messages
        else:
            return RedirectResponse(f"/consent-decisions/{recorded['decision_id']}/receipt?recorded=1",
                                    status_code=303)
    context = await consent_context(request, session, pupil_id)
    return render(request, "share/consent.html", {**context, "values": values}, errors=errors, status=422)


@router.get("/consent-decisions/{decision_id}/receipt", response_class=HTMLResponse)
async def receipt_page(request: Request, session: SignedIn, decision_id: UUID, recorded: int = 0) -> HTMLResponse:
    receipt = await web_of(request).api.get(session, "consent", f"/consent-decisions/{decision_id}/receipt",
                                            params={"format": "json"})
    return render(request, "share/receipt.html", {
        "receipt": receipt, "recorded": bool(recorded), "methods": METHODS, "status_text": STATUS_TEXT,
        "document_kinds": DOCUMENT_KINDS})


# --- Sharing with an agency ---------------------------------------------------------------------


async def documents_of(request: Request, session: Session, pupil_id: UUID) -> list[dict[str, str]]:
    """What the sharing API can assemble for this child: the intervention report and the profile as
    of each completed assessment (the assessment API's list), and each of the child's plans."""
    api = web_of(request).api
    found: list[dict[str, str]] = []
    assessments = await api.get(session, "assessment", f"/pupils/{pupil_id}/assessments", params={"limit": 20})
    for item in assessments["items"]:
        if not item.get("completed_at"):
            continue
        on = str(item["completed_at"])[:10]
        for kind in ("report", "profile"):
            found.append({"value": f"{kind}:{item['assessment_id']}", "kind": kind,
                          "label": f"{DOCUMENT_KINDS[kind]} as of the assessment completed on {on}"})
    try:
        plans = await api.get(session, "planning", "/plans", params={"pupil_id": str(pupil_id), "limit": 20})
    except ApiError as exc:
        if exc.status == 401:
            raise
        plans = {"items": []}
    for plan in plans["items"]:
        found.append({"value": f"action_plan:{plan['plan_id']}", "kind": "action_plan",
                      "label": f"Action plan ({plan.get('strand', '')}, {plan.get('status', '')})"})
    return found


def consent_decision(purposes: list[dict[str, Any]], category: str, kind: str) -> dict[str, Any]:
    """What the consent service reports for this kind of agency and document now — the same
    record the share is decided on (the share itself asks again, and its answer is the one that counts)."""
    entry = next((p for p in purposes if p["purpose"] == f"share_{category}"), None)
    if entry is None:
        return {"allow": False, "reason": "no consent purpose covers this kind of agency"}
    allow = bool(entry.get("sharing_allowed", {}).get(kind))
    status = entry.get("status", "none")
    if allow:
        basis = "consent_in_force" if status == "granted" else f"{entry.get('lawful_basis')}_in_force"
        return {"allow": True, "reason": reason_text(basis), "valid_until": entry.get("valid_until"),
                "decision_id": entry.get("decision_id")}
    code = {"none": "no_record", "refused": "consent_refused", "withdrawn": "consent_withdrawn"}.get(
        status, "kind_of_data_not_covered" if status == "granted" else "no_record")
    return {"allow": False, "reason": reason_text(code), "decision_id": entry.get("decision_id")}


async def share_context(request: Request, session: Session, pupil_id: UUID, agency_id: str,
                        document: str) -> dict[str, Any]:
    api = web_of(request).api
    # The sharing API's list first: a user who may not share is refused here (403: no access).
    agencies = [a for a in (await api.get(session, "reporting", "/sharing/agencies"))["items"] if a.get("active")]
    documents = await documents_of(request, session, pupil_id)
    status = await api.get(session, "consent", f"/pupils/{pupil_id}/consents")
    agency = next((a for a in agencies if a["agency_id"] == agency_id), None)
    chosen = next((d for d in documents if d["value"] == document), None)
    decision = None
    if agency is not None and chosen is not None:
        decision = consent_decision(status["purposes"], agency["category"], chosen["kind"])
        if not agency.get("verified"):
            decision = {"allow": False, "reason": "the agency's endpoint is not verified yet"}
    return {"pupil_id": pupil_id, "name": await pupil_name(request, session, pupil_id), "agencies": agencies,
            "documents": documents, "agency": agency, "document": chosen, "decision": decision,
            "agency_id": agency_id, "document_value": document, "categories": AGENCY_CATEGORIES}


@router.get("/pupils/{pupil_id}/share", response_class=HTMLResponse)
async def share_page(request: Request, session: SignedIn, pupil_id: UUID, agency_id: str = "",
                     document: str = "") -> HTMLResponse:
    context = await share_context(request, session, pupil_id, agency_id, document)
    errors = []
    if (agency_id or document) and context["decision"] is None:
        errors.append("Choose an agency and a document the lists offer")
    return render(request, "share/share.html", context, errors=errors)


@router.post("/pupils/{pupil_id}/share", response_class=HTMLResponse)
async def send_share(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID) -> Response:
    agency_id, document = str(form.get("agency_id", "")), str(form.get("document", ""))
    kind, _, document_id = document.partition(":")
    try:
        shared = await web_of(request).api.post(session, "reporting", "/sharing/shares", json={
            "agency_id": agency_id, "pupil_id": str(pupil_id), "document_kind": kind, "document_id": document_id,
        }, idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 422, 503):
            raise
        context = await share_context(request, session, pupil_id, agency_id, document)
        return render(request, "share/share.html", context, errors=exc.messages, status=exc.status)
    if shared["status"] != "accepted":
        # The consent service said no when the share was asked for: nothing was sent.
        return render(request, "share/refused.html", {
            "pupil_id": pupil_id, "reason": reason_text(shared.get("reason")), "document_kinds": DOCUMENT_KINDS,
            "shared": shared}, status=409)
    query = urlencode({"delivery_id": shared["delivery_id"], "sent": 1})
    return RedirectResponse(f"/pupils/{pupil_id}/shares/{shared['share_id']}?{query}", status_code=303)


@router.get("/pupils/{pupil_id}/shares/{share_id}", response_class=HTMLResponse)
async def share_status(request: Request, session: SignedIn, pupil_id: UUID, share_id: UUID, delivery_id: UUID,
                       sent: int = 0) -> HTMLResponse:
    api = web_of(request).api
    delivery = await api.get(session, "reporting", f"/sharing/deliveries/{delivery_id}")
    if delivery.get("share_id") != str(share_id) or delivery.get("pupil_id") != str(pupil_id):
        raise ApiError(404, "Not Found", "no such share for this child")
    state = delivery["status"]
    if state == "pending" and delivery.get("attempts", 0) > 0:
        state = "retrying"
    try:
        notice = await api.get(session, "reporting", f"/sharing/shares/{share_id}/notice", params={"format": "json"})
    except ApiError as exc:
        if exc.status not in (404, 409):
            raise
        notice = None
    agencies = (await api.get(session, "reporting", "/sharing/agencies"))["items"]
    agency = next((a for a in agencies if a["agency_id"] == delivery["agency_id"]), None)
    return render(request, "share/status.html", {
        "pupil_id": pupil_id, "share_id": share_id, "delivery": delivery, "state": DELIVERY_TEXT.get(
            state, (state, "govuk-tag--grey")), "state_code": state, "notice": notice, "agency": agency,
        "sent": bool(sent), "document_kinds": DOCUMENT_KINDS, "categories": AGENCY_CATEGORIES})


@router.get("/pupils/{pupil_id}/shares/{share_id}/notice", response_class=HTMLResponse)
async def notice_letter(request: Request, session: SignedIn, pupil_id: UUID, share_id: UUID) -> HTMLResponse:
    notice = await web_of(request).api.get(session, "reporting", f"/sharing/shares/{share_id}/notice",
                                           params={"format": "json"})
    if notice.get("pupil_id") != str(pupil_id):
        raise ApiError(404, "Not Found", "no such notice for this child")
    return render(request, "share/notice.html", {"notice": notice, "pupil_id": pupil_id})


page = Page(name="share", router=router)
