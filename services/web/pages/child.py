"""A child's page: the pupil list (by academy and class, filtered by name) and one child's page —
progress per need and strand over time (charts with their tables), observations, the suggestion and
why, plans (draft, issue as a named practitioner, review, close), sessions (logged in a short form,
htmx-enhanced), the intervention report (HTML and PDF) and the consent status and opt-outs.

Every figure comes from the four services' public APIs, called as the signed-in user: a section the
API refuses (an opted-out family, no completed assessment yet) shows the API's reason where its
data would be; the pupil's own record decides whether the page is shown at all (403: no access).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.web.api import ApiError
from services.web.charts import bar_chart, line_chart
from services.web.core import CheckedForm, NavLink, Page, SignedIn, render, web_of
from services.web.session import Session

router = APIRouter()

STAFF_ROLES = frozenset({"practitioner", "senco"})
PURPOSE_NAMES = {
    "interventions": "Taking part in interventions", "online_processing": "Processing by the online tool",
    "share_speech_and_language": "Sharing with speech and language therapy", "share_camhs": "Sharing with CAMHS",
    "share_social_care": "Sharing with social care", "share_educational_psychology": "Sharing with educational psychology",
    "share_local_authority": "Sharing with the local authority", "share_other": "Sharing with other agencies",
}
OBSERVATIONS_SHOWN = 20


# --- Small helpers -------------------------------------------------------------------------------


def pupil_name(pupil: dict[str, Any]) -> str:
    forename = pupil.get("preferred_forename") or pupil.get("legal_forename") or ""
    surname = pupil.get("preferred_surname") or pupil.get("legal_surname") or ""
    return f"{forename} {surname}".strip() or "This pupil"


def _day(value: Any) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).strftime("%d %b %Y")
    except ValueError:
        return str(value)


async def _section(call: Awaitable[Any]) -> Any:
    """A section's data, or the API's ApiError for the page to show in its place (401 re-raised)."""
    try:
        return await call
    except ApiError as exc:
        if exc.status == 401:
            raise
        return exc


def _is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _lines(value: Any) -> list[str]:
    return [line.strip() for line in str(value or "").splitlines() if line.strip()]


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


# --- Charts from the progress API ----------------------------------------------------------------


def progress_charts(progress: dict[str, Any]) -> list[dict[str, Any]]:
    """Per strand: a line chart of its % and each need's % over the completed assessments, and a
    bar chart of the needs at the latest one."""
    points = progress.get("assessments") or []
    strands: list[str] = []
    for point in points:
        strands += [s for s in point.get("strands", {}) if s not in strands]
    charts = []
    for strand in strands:
        scored = [p for p in points if strand in p.get("strands", {})]
        labels = [_day(p["completed_at"]) for p in scored]
        # Same day twice: number them, so each point keeps its own column.
        labels = [f"{label} ({i + 1})" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
        needs: list[str] = []
        for p in scored:
            needs += [n for n in p["strands"][strand].get("need_percents", {}) if n not in needs]
        series: list[tuple[str, Sequence[float | None]]] = [
            (f"{strand} (strand)", [p["strands"][strand]["percent"] for p in scored])]
        series += [(need, [p["strands"][strand]["need_percents"].get(need) for p in scored]) for need in needs]
        latest = scored[-1]["strands"][strand]
        charts.append({
            "strand": strand,
            "line": line_chart(f"progress-{strand}", f"{strand}: % over time",
                               f"The {strand} strand's score and each need's score at each completed assessment",
                               labels, series, unit="%", maximum=100),
            "bars": bar_chart(f"needs-{strand}", f"{strand}: needs at the latest assessment",
                              f"Each need's % score in the {strand} strand on {labels[-1]}",
                              list(latest.get("need_percents", {}).items()), unit="%", maximum=100),
        })
    return charts


# --- The pupil list ------------------------------------------------------------------------------


@router.get("/pupils", response_class=HTMLResponse)
async def pupil_list(request: Request, session: SignedIn, academy_id: UUID | None = None,
                     class_id: UUID | None = None, q: str = "", cursor: str | None = None) -> HTMLResponse:
    api = web_of(request).api
    academies = (await api.get(session, "assessment", "/academies", params={"limit": 100}))["items"]
    if academy_id is None and academies:
        academy_id = UUID(str(academies[0]["academy_id"]))
    classes: list[dict[str, Any]] = []
    pupils: list[dict[str, Any]] = []
    next_cursor = None
    if academy_id is not None:
        classes = (await api.get(session, "assessment", f"/academies/{academy_id}/classes",
                                 params={"limit": 100}))["items"]
        if class_id is None and classes:
            class_id = UUID(str(classes[0]["class_id"]))
    if class_id is not None:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        found = await api.get(session, "assessment", f"/classes/{class_id}/pupils", params=params)
        pupils, next_cursor = found["items"], found.get("next_cursor")
    # The API lists a class; the name filter narrows the names it returned to this user.
    wanted = q.strip().casefold()
    if wanted:
        pupils = [p for p in pupils if wanted in str(p.get("name") or "").casefold()]
    return render(request, "child/list.html", {
        "academies": academies, "classes": classes, "pupils": pupils, "academy_id": str(academy_id or ""),
        "class_id": str(class_id or ""), "q": q, "next_cursor": next_cursor})


# --- The child's page ----------------------------------------------------------------------------


async def child_context(request: Request, session: Session, pupil_id: UUID) -> dict[str, Any]:
    api = web_of(request).api
    p = f"/pupils/{pupil_id}"
    (pupil, progress, observations, suggestion, plans, totals, consents, opt_out) = await asyncio.gather(
        _section(api.get(session, "assessment", p)),
        _section(api.get(session, "assessment", f"{p}/progress")),
        _section(api.get(session, "assessment", f"{p}/observations", params={"limit": OBSERVATIONS_SHOWN})),
        _section(api.get(session, "planning", f"{p}/suggestion")),
        _section(api.get(session, "planning", "/plans", params={"pupil_id": str(pupil_id), "limit": 50})),
        _section(api.get(session, "planning", f"{p}/session-totals")),
        _section(api.get(session, "consent", f"{p}/consents")),
        _section(api.get(session, "consent", f"{p}/opt-out")),
    )
    if isinstance(pupil, ApiError):
        raise pupil  # the pupil's own record decides: no access, not found, erased
    plan_list = [] if isinstance(plans, ApiError) else plans["items"]
    sessions = await asyncio.gather(*(_section(api.get(session, "planning", f"/plans/{plan['plan_id']}/sessions"))
                                      for plan in plan_list))
    for plan, logged in zip(plan_list, sessions, strict=True):
        plan["session_log"] = logged
    purposes = [] if isinstance(consents, ApiError) else consents["purposes"]
    return {
        "pupil": pupil, "pupil_id": str(pupil_id), "name": pupil_name(pupil),
        "progress": progress, "charts": [] if isinstance(progress, ApiError) else progress_charts(progress),
        "observations": observations, "suggestion": suggestion, "plans": plans, "plan_list": plan_list,
        "totals": totals, "consents": consents, "purposes": purposes, "opt_out": opt_out,
        "purpose_names": PURPOSE_NAMES, "day": _day, "today": date.today().isoformat(),
        "is_error": lambda value: isinstance(value, ApiError),
        "can_act": session.has_role(*STAFF_ROLES),
    }


@router.get("/pupils/{pupil_id}", response_class=HTMLResponse)
async def child_page(request: Request, session: SignedIn, pupil_id: UUID) -> HTMLResponse:
    return render(request, "child/child.html", await child_context(request, session, pupil_id))


async def _page_with_errors(request: Request, session: Session, pupil_id: UUID, exc: ApiError,
                            **form: Any) -> HTMLResponse:
    context = await child_context(request, session, pupil_id)
    return render(request, "child/child.html", {**context, **form}, errors=exc.messages,
                  status=exc.status if exc.status >= 400 else 400)


def _back(pupil_id: UUID, anchor: str) -> RedirectResponse:
    return RedirectResponse(f"/pupils/{pupil_id}#{anchor}", status_code=303)


@router.post("/pupils/{pupil_id}/plans")
async def draft_plan(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID) -> Response:
    body = {
        "kind": "individual", "pupil_ids": [str(pupil_id)], "strand": str(form.get("strand") or ""),
        "targets": [str(t) for t in form.getlist("targets")], "activities": _lines(form.get("activities")),
        "frequency": {"sessions_per_week": _int_or_none(form.get("sessions_per_week")),
                      "minutes": _int_or_none(form.get("minutes")), "setting": str(form.get("setting") or "")},
        "review_on": str(form.get("review_on") or "") or None,
    }
    try:
        plan = await web_of(request).api.post(session, "planning", "/plans", json=body,
                                              idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        return await _page_with_errors(request, session, pupil_id, exc, draft_form=dict(form))
    return _back(pupil_id, f"plan-{plan['plan_id']}")


async def _plan_command(request: Request, session: Session, form: Any, pupil_id: UUID, plan_id: UUID,
                        action: str, body: dict[str, Any] | None = None) -> Response:
    try:
        await web_of(request).api.post(session, "planning", f"/plans/{plan_id}/{action}", json=body,
                                       idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        return await _page_with_errors(request, session, pupil_id, exc)
    return _back(pupil_id, f"plan-{plan_id}")


@router.post("/pupils/{pupil_id}/plans/{plan_id}/issue")
async def issue_plan(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID, plan_id: UUID) -> Response:
    return await _plan_command(request, session, form, pupil_id, plan_id, "issue",
                               {"practitioner_id": str(form.get("practitioner_id") or "")})


@router.post("/pupils/{pupil_id}/plans/{plan_id}/review")
async def review_plan(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID, plan_id: UUID) -> Response:
    return await _plan_command(request, session, form, pupil_id, plan_id, "review")


@router.post("/pupils/{pupil_id}/plans/{plan_id}/close")
async def close_plan(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID, plan_id: UUID) -> Response:
    return await _plan_command(request, session, form, pupil_id, plan_id, "close")


@router.post("/pupils/{pupil_id}/plans/{plan_id}/sessions")
async def log_session(request: Request, session: SignedIn, form: CheckedForm, pupil_id: UUID, plan_id: UUID) -> Response:
    """Log a session. With htmx the plan's session block is answered in place (its errors inside
    it); without, back to the child's page (or the page with the error summary)."""
    api = web_of(request).api
    body = {"held_on": str(form.get("held_on") or "") or None, "minutes": _int_or_none(form.get("minutes")),
            "pupils_present": [str(pupil_id)], "note": str(form.get("note") or "").strip() or None}
    errors: list[str] = []
    try:
        await api.post(session, "planning", f"/plans/{plan_id}/sessions", json=body,
                       idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        if not _is_htmx(request):
            return await _page_with_errors(request, session, pupil_id, exc)
        errors = exc.messages
    if not _is_htmx(request):
        return _back(pupil_id, f"plan-{plan_id}")
    plan = await api.get(session, "planning", f"/plans/{plan_id}")
    plan["session_log"] = await _section(api.get(session, "planning", f"/plans/{plan_id}/sessions"))
    return render(request, "child/_sessions.html", {
        "plan": plan, "pupil_id": str(pupil_id), "today": date.today().isoformat(), "day": _day,
        "is_error": lambda value: isinstance(value, ApiError), "can_act": True, "session_errors": errors,
        "session_form": dict(form) if errors else {}})


# --- The intervention report ---------------------------------------------------------------------

_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)


@router.get("/pupils/{pupil_id}/report", response_class=HTMLResponse)
async def report(request: Request, session: SignedIn, pupil_id: UUID) -> HTMLResponse:
    """The reporting API's report (autoescaped there), its body shown inside the layout; its own
    styles are the strict CSP's to refuse, its content stays readable."""
    api = web_of(request).api
    pupil = await api.get(session, "assessment", f"/pupils/{pupil_id}")
    errors: list[str] = []
    body = ""
    try:
        html = (await api.request(session, "GET", "reporting", f"/pupils/{pupil_id}/intervention-report",
                                  params={"format": "html"}, headers={"Accept": "text/html"})).text
        found = _BODY.search(html)
        body = re.sub(r"<(/?)h([1-5])\b", lambda m: f"<{m.group(1)}h{int(m.group(2)) + 1}",
                      found.group(1) if found else "")
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        errors = exc.messages
    return render(request, "child/report.html", {"pupil_id": str(pupil_id), "name": pupil_name(pupil),
                                                 "report_body": body}, errors=errors)


@router.get("/pupils/{pupil_id}/report.pdf")
async def report_pdf(request: Request, session: SignedIn, pupil_id: UUID) -> Response:
    answer = await web_of(request).api.request(session, "GET", "reporting", f"/pupils/{pupil_id}/intervention-report",
                                               params={"format": "pdf"}, headers={"Accept": "application/pdf"})
    return Response(answer.content, media_type="application/pdf",
                    headers={"Content-Disposition": 'attachment; filename="intervention-report.pdf"'})


page = Page(
    name="child", router=router,
    nav=(NavLink("Pupils", "/pupils", "Find a child: their progress, plans, sessions, report and consent",
                 roles=STAFF_ROLES),),
    demo=(("senco", "/pupils?academy_id={academy_id}"),),
    # bench/web.py gives one demo pupil a completed assessment, an issued plan and a session first.
    bench=(("senco", "/pupils/{pupil_id}"),),
)
