"""The data-protection officer's console (issue 20, item 1): who shared what with which agency (and
its CSV), each share's proof; who read a child's record; consent history and receipts; the
subject-access export (HTML to read, JSON to send); erasure with a confirmation step; retention
policies and what expires next; the audit ledger's status and "verify now".

Every screen is the reporting or consent service's DPO API called with the DPO's own token: the same
call, audited the same way (the audit API records each question as `audit_queried`; the export and
the receipts are audited reads). The web decides nothing: a user without the role sees no link, and
typing a URL gets the API's 403 as the "no access" page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.web.api import ApiError
from services.web.core import CheckedForm, NavLink, Page, SignedIn, render, web_of
from services.web.session import Session

router = APIRouter(prefix="/dpo")

DPO_ROLES = frozenset({"dpo"})
SHARE_FILTERS = ("pupil_id", "agency_id", "agency_category", "staff_id", "academy_id", "from", "to")
AGENCY_CATEGORIES = ("camhs", "educational_psychology", "social_care", "speech_and_language", "local_authority", "other")
ERASURE_REASONS = (("right_to_erasure", "The family asked for erasure (right to erasure)"),
                   ("recorded_in_error", "The child was recorded in error"),
                   ("retention_expired", "The retention period has ended"))


def reference_of(pupil_id: str) -> str:
    """What the DPO types to confirm an erasure: the first eight characters of the pupil's id, shown
    on the page (a deliberate step that a slip of the mouse cannot take)."""
    return pupil_id[:8].upper()


async def _academies(request: Request, session: Session) -> list[dict[str, Any]]:
    try:
        data = await web_of(request).api.get(session, "assessment", "/academies", params={"limit": 100})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return []
    return list(data["items"])


async def _agencies(request: Request, session: Session) -> list[dict[str, Any]]:
    try:
        data = await web_of(request).api.get(session, "reporting", "/sharing/agencies")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return []
    return list(data.get("items", data) if isinstance(data, dict) else data)


def _given(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    return {name: value for name in names if (value := request.query_params.get(name, "").strip())}


# --- The console: ledger status and "verify now" ----------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def console(request: Request, session: SignedIn) -> HTMLResponse:
    status = await web_of(request).api.get(session, "reporting", "/audit/status")
    return render(request, "dpo/console.html", {"status": status, "verification": None})


@router.post("/ledger/verification", response_class=HTMLResponse)
async def verify_now(request: Request, session: SignedIn, form: CheckedForm) -> HTMLResponse:
    web = web_of(request)
    verification = await web.api.post(session, "reporting", "/audit/verification",
                                      idempotency_key=str(form["idempotency_key"]))
    status = await web.api.get(session, "reporting", "/audit/status")
    return render(request, "dpo/console.html", {"status": status, "verification": verification})


# --- Shares ------------------------------------------------------------------------------------------


@router.get("/shares", response_class=HTMLResponse)
async def shares(request: Request, session: SignedIn) -> HTMLResponse:
    web = web_of(request)
    filters = _given(request, SHARE_FILTERS)
    params: dict[str, Any] = {**filters, "limit": 100}
    if cursor := request.query_params.get("cursor"):
        params["cursor"] = cursor
    errors: list[str] = []
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    try:
        page = await web.api.get(session, "reporting", "/audit/shares", params=params)
    except ApiError as exc:
        if exc.status in (400, 422):
            errors = exc.messages  # the filters are shown again beside the message; nothing listed
        else:
            raise
    academies = await _academies(request, session)
    agencies = await _agencies(request, session)
    names = {a["academy_id"]: a["name"] for a in academies}
    return render(request, "dpo/shares.html", {
        "filters": filters, "shares": page["items"], "next_cursor": page.get("next_cursor"),
        "academies": academies, "agencies": agencies, "academy_names": names, "categories": AGENCY_CATEGORIES,
        "csv_query": urlencode(filters),
        "searched": bool(request.query_params),
    }, errors=errors, status=400 if errors else 200)


@router.get("/shares.csv")
async def shares_csv(request: Request, session: SignedIn) -> Response:
    """The API's CSV, as it sent it: the same rows as the table (every row, not one page), cells a
    spreadsheet would run as a formula already prefixed by the API."""
    answer = await web_of(request).api.request(session, "GET", "reporting", "/audit/shares.csv",
                                               params=_given(request, SHARE_FILTERS), headers={"Accept": "text/csv"})
    return Response(answer.content, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="flourish-shares.csv"'})


@router.get("/shares/{share_id}/proof", response_class=HTMLResponse)
async def share_proof(request: Request, session: SignedIn, share_id: UUID) -> HTMLResponse:
    proof = await web_of(request).api.get(session, "reporting", f"/audit/shares/{share_id}/proof")
    return render(request, "dpo/proof.html", {"share_id": str(share_id), "proof": proof})


# --- One child: reads, consent, export, erasure -----------------------------------------------------


@router.get("/pupils", response_class=HTMLResponse)
async def find_pupil(request: Request, session: SignedIn) -> Response:
    given = request.query_params.get("pupil_id", "").strip()
    if not given:
        return render(request, "dpo/find_pupil.html", {"given": ""})
    try:
        pupil_id = UUID(given)
    except ValueError:
        return render(request, "dpo/find_pupil.html", {"given": given}, status=400,
                      errors=["Enter the child's Flourish id, like 3f2a9c1d-0b4e-4d6a-9c1e-2b7d5e8f0a13"])
    return RedirectResponse(f"/dpo/pupils/{pupil_id}", status_code=303)


@router.get("/pupils/{pupil_id}", response_class=HTMLResponse)
async def pupil(request: Request, session: SignedIn, pupil_id: UUID) -> HTMLResponse:
    api = web_of(request).api
    reads = await api.get(session, "reporting", f"/audit/pupils/{pupil_id}/reads", params={"limit": 100})
    erasure = await _erasure_of(request, session, pupil_id)
    history = await api.get(session, "consent", f"/pupils/{pupil_id}/consents/history", params={"limit": 100})
    return render(request, "dpo/pupil.html", {
        "pupil_id": str(pupil_id), "reference": reference_of(str(pupil_id)), "reads": reads["items"],
        "reads_more": bool(reads.get("next_cursor")), "history": history["items"], "erasure": erasure})


async def _erasure_of(request: Request, session: Session, pupil_id: UUID) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = await web_of(request).api.get(session, "consent", f"/pupils/{pupil_id}/erasure")
    except ApiError as exc:
        if exc.status == 404:
            return None  # not erased (an unknown pupil: the reads and history said so already)
        raise
    return record


@router.get("/consent-decisions/{decision_id}/receipt", response_class=HTMLResponse)
async def receipt(request: Request, session: SignedIn, decision_id: UUID) -> HTMLResponse:
    document = await web_of(request).api.get(session, "consent", f"/consent-decisions/{decision_id}/receipt",
                                             params={"format": "json"})
    return render(request, "dpo/receipt.html", {"receipt": document, "decision_id": str(decision_id)})


@router.get("/pupils/{pupil_id}/subject-access", response_class=HTMLResponse)
async def subject_access(request: Request, session: SignedIn, pupil_id: UUID) -> HTMLResponse:
    document = await web_of(request).api.get(session, "consent", f"/pupils/{pupil_id}/subject-access",
                                             params={"format": "json"})
    return render(request, "dpo/subject_access.html", {"pupil_id": str(pupil_id), "document": document})


@router.get("/pupils/{pupil_id}/subject-access.json")
async def subject_access_json(request: Request, session: SignedIn, pupil_id: UUID) -> Response:
    answer = await web_of(request).api.request(session, "GET", "consent", f"/pupils/{pupil_id}/subject-access",
                                               params={"format": "json"})
    return Response(answer.content, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="subject-access-{pupil_id}.json"'})


@router.get("/pupils/{pupil_id}/erasure", response_class=HTMLResponse)
async def erasure_form(request: Request, session: SignedIn, pupil_id: UUID) -> HTMLResponse:
    erasure = await _erasure_of(request, session, pupil_id)
    # The API decides who may see the child: a consent status read is its check.
    await web_of(request).api.get(session, "consent", f"/pupils/{pupil_id}/consents/history", params={"limit": 1})
    return render(request, "dpo/erasure.html", {"pupil_id": str(pupil_id), "reference": reference_of(str(pupil_id)),
                                                "erasure": erasure, "reasons": ERASURE_REASONS, "chosen": "",
                                                "field_errors": {}})


@router.post("/pupils/{pupil_id}/erasure", response_class=HTMLResponse)
async def erase(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID) -> Response:
    reference = reference_of(str(pupil_id))
    typed = str(form.get("confirmation", "")).strip().upper()
    reason = str(form.get("reason", ""))
    field_errors: dict[str, str] = {}
    if reason not in {code for code, _ in ERASURE_REASONS}:
        field_errors["reason"] = "Choose why the child's data is being erased"
    if typed != reference:
        field_errors["confirmation"] = f"Type the child's reference, {reference}, to confirm the erasure"
    context = {"pupil_id": str(pupil_id), "reference": reference, "erasure": None, "reasons": ERASURE_REASONS,
               "chosen": reason, "field_errors": field_errors}
    if field_errors:  # nothing is sent to the API: nothing is erased
        return render(request, "dpo/erasure.html", context, status=400, errors=list(field_errors.values()))
    try:
        await web_of(request).api.post(session, "consent", f"/pupils/{pupil_id}/erasure", json={"reason": reason},
                                       idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status in (400, 409, 422):
            return render(request, "dpo/erasure.html", context, status=exc.status, errors=exc.messages)
        raise
    return RedirectResponse(f"/dpo/pupils/{pupil_id}", status_code=303)


# --- Retention ---------------------------------------------------------------------------------------


@router.get("/retention", response_class=HTMLResponse)
async def retention(request: Request, session: SignedIn) -> HTMLResponse:
    api = web_of(request).api
    academies = await _academies(request, session)
    chosen = request.query_params.get("academy_id") or (academies[0]["academy_id"] if academies else "")
    days = request.query_params.get("days", "90").strip() or "90"
    policies: list[dict[str, Any]] = []
    preview: dict[str, Any] = {"items": [], "pupils_with_incomplete_clock": 0, "until": ""}
    errors: list[str] = []
    if chosen:
        try:
            policies = (await api.get(session, "consent", f"/academies/{chosen}/retention-policies"))["items"]
            preview = await api.get(session, "consent", f"/academies/{chosen}/retention/preview",
                                    params={"days": days, "limit": 100})
        except ApiError as exc:
            if exc.status not in (400, 422):
                raise
            errors = exc.messages
    return render(request, "dpo/retention.html", {"academies": academies, "chosen": chosen, "days": days,
                                                  "policies": policies, "preview": preview},
                  errors=errors, status=400 if errors else 200)


page = Page(
    name="dpo", router=router,
    nav=(NavLink("Data protection", "/dpo", "Who shared what with which agency, who read a child's record, "
                 "subject-access exports, erasure, retention and the audit ledger", roles=DPO_ROLES),),
    demo=(("dpo", "/dpo"), ("dpo", "/dpo/shares"), ("dpo", "/dpo/retention")),
    bench=(("dpo", "/dpo/shares"),),
)
