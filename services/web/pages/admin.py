"""Trust administration (issue 20, item 2): academies, roster imports, agencies, the trust's and each
academy's dashboard, framework versions. For the trust's central team (`trust_admin`; frameworks
also for the platform operator, `admin`).

Every action is the API's own call with the user's token, so it is checked and audited as the API
does it. The web narrows, never widens: a user without `trust_admin` gets the no-access page here
even where an API would answer them (a DPO may read /academies), and the API refuses what the
role does not allow. Dashboards show the API's figures as they come (the trust's DfE-suppressed
`c` cells included): nothing is recomputed from raw rows.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from services.web.api import ApiError, ServiceUnreachable
from services.web.charts import bar_chart
from services.web.core import CheckedForm, NavLink, Page, SignedIn, render, web_of
from services.web.session import Session

router = APIRouter(prefix="/admin")

ADMINS = frozenset({"trust_admin"})
FRAMEWORK_ADMINS = frozenset({"trust_admin", "admin"})
# The API refuses a larger roster file (413) or framework (413); the web does not forward one.
MAX_ROSTER_BYTES = 5 * 1024 * 1024
MAX_FRAMEWORK_BYTES = 2 * 1024 * 1024
CATEGORIES = (("camhs", "CAMHS"), ("speech_and_language", "Speech and language"), ("social_care", "Social care"),
              ("educational_psychology", "Educational psychology"), ("local_authority", "Local authority"),
              ("other", "Other"))


def admin_only(session: Session, roles: frozenset[str] = ADMINS) -> None:
    """The no-access page for anyone without the role: these screens are the central team's."""
    if not session.has_role(*roles):
        raise ApiError(403, "Forbidden", "these screens are for the trust's central team")


async def _send_body(request: Request, session: Session, service: str, path: str, content: bytes,
                     content_type: str, idempotency_key: str, params: dict[str, Any] | None = None) -> Any:
    """A POST whose body is a file (CSV, YAML), not JSON: same headers and errors as `Api.post`."""
    api = web_of(request).api
    headers = {"Authorization": f"Bearer {session.access_token}", "Accept": "application/json",
               "Content-Type": content_type, "Idempotency-Key": idempotency_key}
    try:
        response = await api.client.post(f"{api.urls[service]}{path}", content=content, headers=headers,
                                          params=params)
    except httpx.HTTPError as exc:
        raise ServiceUnreachable(503, "The service is not available",
                                 f"{service} could not be reached; try again shortly") from exc
    if response.status_code >= 400:
        raise ApiError.from_response(response)
    return response.json() if response.content else None


async def _upload(form: Any, field: str, limit: int) -> bytes | None:
    upload = form.get(field)
    if not isinstance(upload, UploadFile):
        return None
    data = await upload.read(limit + 1)
    return data


async def _academies(request: Request, session: Session) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await web_of(request).api.get(session, "assessment", "/academies",
                                                                  params={"limit": 200}))["items"]
    return items


# --- Academies -----------------------------------------------------------------------------------


@router.get("/academies", response_class=HTMLResponse)
async def academies(request: Request, session: SignedIn) -> HTMLResponse:
    admin_only(session)
    return render(request, "admin/academies.html", {"academies": await _academies(request, session), "values": {}})


@router.post("/academies", response_model=None)
async def register_academy(request: Request, session: SignedIn, form: CheckedForm) -> Response:
    admin_only(session)
    values = {"academy_id": str(form.get("academy_id", "")).strip(), "name": str(form.get("name", "")).strip()}
    errors = []
    try:
        academy_id = UUID(values["academy_id"])
    except ValueError:
        errors.append("Enter the academy's id as your identity provider gives it (a UUID)")
    if not values["name"]:
        errors.append("Enter the academy's name")
    if not errors:
        try:
            await web_of(request).api.request(session, "PUT", "assessment", f"/academies/{academy_id}",
                                              json={"name": values["name"]},
                                              idempotency_key=str(form["idempotency_key"]))
            return RedirectResponse("/admin/academies", status_code=303)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            errors = exc.messages
    return render(request, "admin/academies.html", {"academies": await _academies(request, session),
                                                    "values": values}, errors=errors, status=422)


# --- Roster imports ------------------------------------------------------------------------------


@router.get("/academies/{academy_id}/roster-import", response_class=HTMLResponse)
async def roster_form(request: Request, session: SignedIn, academy_id: UUID) -> HTMLResponse:
    admin_only(session)
    academy = await _academy(request, session, academy_id)
    return render(request, "admin/roster_import.html", {"academy": academy, "report": None, "problems": []})


async def _academy(request: Request, session: Session, academy_id: UUID) -> dict[str, Any]:
    for academy in await _academies(request, session):
        if academy["academy_id"] == str(academy_id):
            return academy
    raise ApiError(404, "Not Found")


@router.post("/academies/{academy_id}/roster-import", response_class=HTMLResponse)
async def roster_import(request: Request, session: SignedIn, form: CheckedForm, academy_id: UUID) -> HTMLResponse:
    admin_only(session)
    academy = await _academy(request, session, academy_id)
    data = await _upload(form, "file", MAX_ROSTER_BYTES)
    context: dict[str, Any] = {"academy": academy, "report": None, "problems": []}
    if not data:
        return render(request, "admin/roster_import.html", context, status=422,
                      errors=["Choose the MIS export (a CSV file) to import"])
    if len(data) > MAX_ROSTER_BYTES:
        return render(request, "admin/roster_import.html", context, status=413,
                      errors=["The file is larger than 5 MB: nothing was imported"])
    whole_roll = form.get("whole_roll") == "true"
    try:
        report = await _send_body(request, session, "assessment", f"/academies/{academy_id}/roster-imports",
                                  data, "text/csv", str(form["idempotency_key"]),
                                  params={"whole_roll": "true" if whole_roll else "false"})
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        problems = exc.problem.get("problems") if isinstance(exc.problem.get("problems"), list) else []
        return render(request, "admin/roster_import.html", {**context, "problems": problems},
                      errors=[exc.detail or exc.title], status=exc.status)
    return render(request, "admin/roster_import.html", {**context, "report": report})


# --- Dashboards ----------------------------------------------------------------------------------


def _strand_chart(chart_id: str, title: str, cells: dict[str, Any]) -> tuple[Any, list[str]]:
    """A bar per strand the API gave a number for; the strands it suppressed listed, not drawn."""
    shown = [(strand, float(value)) for strand, value in cells.items() if isinstance(value, int | float)]
    suppressed = [strand for strand, value in cells.items() if not isinstance(value, int | float)]
    description = "Children per working-at strand" + (
        f"; suppressed (1 to 5 children, or to protect such a cell): {', '.join(suppressed)}" if suppressed else "")
    return bar_chart(chart_id, title, description, shown, unit="children"), suppressed


@router.get("/dashboard", response_class=HTMLResponse)
async def trust_dashboard(request: Request, session: SignedIn) -> HTMLResponse:
    admin_only(session)
    web = web_of(request)
    dashboard = await web.api.get(session, "reporting", "/trust/dashboard")
    names = {a["academy_id"]: a["name"] for a in await _academies(request, session)}
    rows = []
    for i, row in enumerate(dashboard["academies"]):
        name = names.get(row["academy_id"], row["academy_id"])
        chart, suppressed = _strand_chart(f"academy-{i}", f"{name}: children per working-at strand", row["working_at"])
        rows.append({"name": name, "academy_id": row["academy_id"], "cells": row["working_at"],
                     "total": row["total"], "chart": chart, "suppressed": suppressed})
    totals_chart, totals_suppressed = _strand_chart("trust-totals", "The trust: children per working-at strand",
                                                    dashboard["totals"])
    return render(request, "admin/trust_dashboard.html", {
        "dashboard": dashboard, "rows": rows, "totals_chart": totals_chart, "totals_suppressed": totals_suppressed,
        "academies": [{"academy_id": k, "name": v} for k, v in names.items()]})


@router.get("/academies/{academy_id}/dashboard", response_class=HTMLResponse)
async def academy_dashboard(request: Request, session: SignedIn, academy_id: UUID) -> HTMLResponse:
    admin_only(session)
    academy = await _academy(request, session, academy_id)
    dashboard = await web_of(request).api.get(session, "reporting", f"/academies/{academy_id}/dashboard")
    chart, suppressed = _strand_chart("academy", f"{academy['name']}: children per working-at strand",
                                      dashboard["working_at"])
    return render(request, "admin/academy_dashboard.html", {"academy": academy, "dashboard": dashboard,
                                                            "chart": chart, "suppressed": suppressed})


# --- Framework versions --------------------------------------------------------------------------


@router.get("/frameworks", response_class=HTMLResponse)
async def frameworks(request: Request, session: SignedIn) -> HTMLResponse:
    admin_only(session, FRAMEWORK_ADMINS)
    listed = await web_of(request).api.get(session, "assessment", "/frameworks", params={"limit": 200})
    return render(request, "admin/frameworks.html", {"frameworks": listed["items"], "loaded": None})


@router.post("/frameworks", response_class=HTMLResponse)
async def load_framework(request: Request, session: SignedIn, form: CheckedForm) -> HTMLResponse:
    admin_only(session, FRAMEWORK_ADMINS)
    data = await _upload(form, "file", MAX_FRAMEWORK_BYTES)
    errors: list[str] = []
    loaded = None
    if not data:
        errors = ["Choose the framework document (YAML or JSON) to load"]
    elif len(data) > MAX_FRAMEWORK_BYTES:
        errors = ["The file is larger than 2 MB: nothing was loaded"]
    else:
        kind = "application/json" if data.lstrip()[:1] == b"{" else "application/yaml"
        try:
            loaded = await _send_body(request, session, "assessment", "/frameworks", data, kind,
                                      str(form["idempotency_key"]))
        except ApiError as exc:
            if exc.status in (401, 403):
                raise
            errors = exc.messages
    listed = await web_of(request).api.get(session, "assessment", "/frameworks", params={"limit": 200})
    return render(request, "admin/frameworks.html", {"frameworks": listed["items"], "loaded": loaded},
                  errors=errors, status=422 if errors else 200)


@router.get("/frameworks/{version}", response_class=HTMLResponse)
async def framework(request: Request, session: SignedIn, version: str) -> HTMLResponse:
    admin_only(session, FRAMEWORK_ADMINS)
    document = await web_of(request).api.get(session, "assessment", f"/frameworks/{quote(version, safe='')}")
    return render(request, "admin/framework.html", {"framework": document})


# --- Agencies ------------------------------------------------------------------------------------


async def _agencies(request: Request, session: Session) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await web_of(request).api.get(session, "reporting", "/sharing/agencies"))["items"]
    return items


@router.get("/agencies", response_class=HTMLResponse)
async def agencies(request: Request, session: SignedIn) -> HTMLResponse:
    admin_only(session)
    undeliverable = (await web_of(request).api.get(session, "reporting", "/sharing/undeliverable"))["items"]
    return render(request, "admin/agencies.html", {"agencies": await _agencies(request, session), "values": {},
                                                   "categories": CATEGORIES, "undeliverable": undeliverable})


@router.post("/agencies", response_class=HTMLResponse)
async def register_agency(request: Request, session: SignedIn, form: CheckedForm) -> HTMLResponse:
    admin_only(session)
    values = {name: str(form.get(name, "")).strip() for name in ("category", "organisation", "endpoint_url")}
    try:
        # The API keeps no Idempotency-Key here (a stored answer would keep the secret); the header is ignored.
        created = await web_of(request).api.post(session, "reporting", "/sharing/agencies", json=values,
                                                 idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status in (401, 403):
            raise
        undeliverable = (await web_of(request).api.get(session, "reporting", "/sharing/undeliverable"))["items"]
        return render(request, "admin/agencies.html", {"agencies": await _agencies(request, session),
                                                       "values": values, "categories": CATEGORIES,
                                                       "undeliverable": undeliverable},
                      errors=exc.messages, status=exc.status)
    return render(request, "admin/secret.html", {"agency_id": created["agency_id"], "secret": created["signing_secret"],
                                                 "organisation": created["organisation"], "registered": True,
                                                 "verification": created.get("verification") or {}})


@router.get("/agencies/{agency_id}", response_class=HTMLResponse)
async def agency(request: Request, session: SignedIn, agency_id: UUID) -> HTMLResponse:
    admin_only(session)
    return await _agency_page(request, session, agency_id)


async def _agency_page(request: Request, session: Session, agency_id: UUID, *, errors: list[str] | None = None,
                       notice: str | None = None, status: int = 200) -> HTMLResponse:
    web = web_of(request)
    found = [a for a in await _agencies(request, session) if a["agency_id"] == str(agency_id)]
    if not found:
        raise ApiError(404, "Not Found")
    log = await web.api.get(session, "reporting", f"/sharing/agencies/{agency_id}/deliveries", params={"limit": 50})
    failed = sorted({a["delivery_id"] for a in log["items"] if a["outcome"] == "failed"})
    return render(request, "admin/agency.html", {"agency": found[0], "attempts": log["items"], "failed": failed,
                                                 "notice": notice}, errors=errors or [], status=status)


async def _agency_action(request: Request, session: Session, form: Any, agency_id: UUID, action: str) -> Any:
    return await web_of(request).api.post(session, "reporting", f"/sharing/agencies/{agency_id}/{action}",
                                          idempotency_key=str(form["idempotency_key"]))


@router.post("/agencies/{agency_id}/verification", response_class=HTMLResponse)
async def verify_agency(request: Request, session: SignedIn, form: CheckedForm, agency_id: UUID) -> HTMLResponse:
    admin_only(session)
    try:
        result = await _agency_action(request, session, form, agency_id, "verification")
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        return await _agency_page(request, session, agency_id, errors=exc.messages, status=exc.status)
    if result["verified"]:
        return await _agency_page(request, session, agency_id, notice="The endpoint answered: it is verified")
    return await _agency_page(request, session, agency_id, status=422, errors=[
        f"The endpoint did not verify ({result.get('error') or 'no 2xx answer'}): nothing is sent to it until it does"])


@router.post("/agencies/{agency_id}/secret-rotation", response_class=HTMLResponse)
async def rotate_secret(request: Request, session: SignedIn, form: CheckedForm, agency_id: UUID) -> HTMLResponse:
    admin_only(session)
    try:
        rotated = await _agency_action(request, session, form, agency_id, "secret-rotation")
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        return await _agency_page(request, session, agency_id, errors=exc.messages, status=exc.status)
    found = [a for a in await _agencies(request, session) if a["agency_id"] == str(agency_id)]
    return render(request, "admin/secret.html", {"agency_id": str(agency_id), "secret": rotated["signing_secret"],
                                                 "organisation": found[0]["organisation"] if found else "",
                                                 "registered": False, "verification": {},
                                                 "overlap_until": rotated.get("rotation_overlap_until")})


@router.post("/agencies/{agency_id}/deactivation", response_class=HTMLResponse)
async def deactivate(request: Request, session: SignedIn, form: CheckedForm, agency_id: UUID) -> HTMLResponse:
    admin_only(session)
    if form.get("confirm") != "yes":
        return await _agency_page(request, session, agency_id, status=422, errors=[
            "Confirm that the agency should receive nothing further: nothing was changed"])
    try:
        done = await _agency_action(request, session, form, agency_id, "deactivation")
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        return await _agency_page(request, session, agency_id, errors=exc.messages, status=exc.status)
    return await _agency_page(request, session, agency_id, notice=(
        f"Deactivated: {done.get('shares_stopped', 0)} pending share(s) stopped. Deletion notices for what the "
        "agency already holds are still sent."))


@router.post("/deliveries/{delivery_id}/replay", response_class=HTMLResponse)
async def replay(request: Request, session: SignedIn, form: CheckedForm, delivery_id: UUID) -> Response:
    admin_only(session)
    back = _uuid_or_none(form.get("agency_id"))
    try:
        await web_of(request).api.post(session, "reporting", f"/sharing/deliveries/{delivery_id}/replay",
                                       idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status in (401, 403, 404) or not back:
            raise
        return await _agency_page(request, session, back, errors=exc.messages, status=exc.status)
    if back:
        return await _agency_page(request, session, back, notice="Queued to be sent again (consent is asked again)")
    return RedirectResponse("/admin/agencies", status_code=303)


def _uuid_or_none(value: object) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


page = Page(
    name="admin", router=router,
    nav=(NavLink("Academies", "/admin/academies", "The trust's academies, and importing their MIS roster",
                 roles=ADMINS),
         NavLink("Trust dashboard", "/admin/dashboard", "Children per working-at strand by academy", roles=ADMINS),
         NavLink("Agencies", "/admin/agencies", "Agencies the trust shares with: register, verify, rotate, deactivate",
                 roles=ADMINS),
         NavLink("Framework versions", "/admin/frameworks", "The assessment frameworks the trust uses",
                 roles=FRAMEWORK_ADMINS)),
    demo=(("trust-admin", "/admin/academies"), ("trust-admin", "/admin/dashboard"),
          ("trust-admin", "/admin/academies/{academy_id}/dashboard"),
          ("trust-admin", "/admin/academies/{academy_id}/roster-import"),
          ("trust-admin", "/admin/agencies"), ("trust-admin", "/admin/frameworks")),
    bench=(("trust-admin", "/admin/dashboard"),),
)
