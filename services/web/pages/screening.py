"""Class screening: choose a class or group and a framework, rate every pupil against every
statement of the chosen strands in one grid, complete it, and read the class profile.

    GET  /screening                          the academies' classes and groups, the frameworks
    GET  /screening/new?target=&framework=    the framework's strands to screen
    POST /screening/new                       POST /assessments (a class or group screening)
    GET  /screening/{id}                      the grid: pupils x statements, each cell a level
    POST /screening/{id}/cell                 (htmx) one cell: POST /observations, a fragment back
    POST /screening/{id}                      (no JavaScript) the whole grid: POST /observations/bulk
                                              of the changed cells; action=complete also completes
    GET  /screening/{id}/profile             GET /screenings/{id}/profile: the class profile

The grid's current levels come from each pupil's observations of the screening's assessment (the
newest per statement): what the server holds, so a reload shows exactly what was saved.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.web.api import ApiError
from services.web.charts import bar_chart
from services.web.core import CheckedForm, NavLink, Page, SignedIn, idempotency_key_for, render, web_of
from services.web.session import Session

router = APIRouter()

LEVELS = (("rarely", "Rarely"), ("emerging", "Emerging"), ("developing", "Developing"), ("secure", "Secure"))
LEVEL_NAMES = dict(LEVELS)
SCREENERS = frozenset({"practitioner", "senco"})
MAX_PAGES = 20  # of 200: a class list or a pupil's observations longer than this is not a class's


@dataclass
class Statement:
    id: str
    number: int
    text: str


@dataclass
class NeedColumns:
    name: str
    statements: list[Statement]


@dataclass
class StrandColumns:
    id: str
    name: str
    needs: list[NeedColumns]

    @property
    def width(self) -> int:
        return sum(len(n.statements) for n in self.needs)


@dataclass
class Row:
    pupil_id: str
    assessment_id: str
    name: str
    completed: bool
    levels: dict[str, str] = field(default_factory=dict)


async def _all_pages(session: Session, web: Any, service: str, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = await web.api.get(session, service, path, params=params)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return items


def _columns(framework: dict[str, Any], strands: list[str]) -> list[StrandColumns]:
    chosen = []
    for strand in framework["strands"]:
        if strand["id"] in strands:
            chosen.append(StrandColumns(strand["id"], strand["name"], [
                NeedColumns(need["name"], [Statement(f"{strand['id']}.{s['number']}", s["number"], s["text"])
                                           for s in need["statements"]])
                for need in strand["needs"]]))
    return chosen


def _name(pupil: dict[str, Any]) -> str:
    forename = pupil.get("preferred_forename") or pupil.get("legal_forename") or ""
    surname = pupil.get("preferred_surname") or pupil.get("legal_surname") or ""
    return f"{forename} {surname}".strip() or str(pupil["pupil_id"])


async def _levels_of(session: Session, web: Any, pupil_id: str, assessment_id: str) -> dict[str, str]:
    """The assessment's current level per statement: the newest observation of each."""
    levels: dict[str, str] = {}
    cursor = None
    for _ in range(MAX_PAGES):
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = await web.api.get(session, "assessment", f"/pupils/{pupil_id}/observations", params=params)
        for observation in page["items"]:
            if observation["assessment_id"] == assessment_id:
                levels.setdefault(observation["statement_id"], observation["level"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return levels


async def _grid(session: Session, web: Any, screening_id: str) -> dict[str, Any]:
    """Everything the grid shows, read through the APIs as the user (the API's 403/404 propagate)."""
    screening = await web.api.get(session, "assessment", f"/screenings/{screening_id}")
    framework_call = web.api.get(session, "assessment", f"/frameworks/{screening['framework_version']}")
    assessments = screening["assessments"]
    if screening["class_id"]:
        names_call: Any = _all_pages(session, web, "assessment", f"/classes/{screening['class_id']}/pupils")
    else:
        names_call = asyncio.gather(*(web.api.get(session, "assessment", f"/pupils/{a['pupil_id']}")
                                      for a in assessments))
    level_calls = asyncio.gather(*(_levels_of(session, web, a["pupil_id"], a["assessment_id"]) for a in assessments))
    framework, pupils, levels = await asyncio.gather(framework_call, names_call, level_calls)
    names = {p["pupil_id"]: (p.get("name") or _name(p)) for p in pupils}
    rows = [Row(a["pupil_id"], a["assessment_id"], names.get(a["pupil_id"]) or "A pupil no longer on roll",
                a["completed"], lv) for a, lv in zip(assessments, levels, strict=True)]
    rows.sort(key=lambda r: (r.name, r.pupil_id))
    columns = _columns(framework, screening["strands"])
    statements = [s for strand in columns for need in strand.needs for s in need.statements]
    total = len(rows) * len(statements)
    rated = sum(1 for r in rows for s in statements if s.id in r.levels)
    return {"screening": screening, "framework": framework, "columns": columns, "statements": statements,
            "rows": rows, "rated": rated, "total": total, "levels": LEVELS,
            "all_completed": bool(rows) and all(r.completed for r in rows)}


def _cell_fields(form: FormData) -> list[tuple[str, str, str, str]]:
    """(pupil_id, assessment_id, statement_id, value) of every grid cell the form sends."""
    cells = []
    for name, value in form.multi_items():
        parts = name.split("|")
        if len(parts) == 3 and isinstance(value, str):
            cells.append((parts[0], parts[1], parts[2], value))
    return cells


# --- Choosing what to screen ----------------------------------------------------------------------


@router.get("/screening", response_class=HTMLResponse)
async def choose(request: Request, session: SignedIn) -> HTMLResponse:
    web = web_of(request)
    academies, frameworks = await asyncio.gather(_all_pages(session, web, "assessment", "/academies"),
                                                 _all_pages(session, web, "assessment", "/frameworks"))

    async def targets(academy: dict[str, Any]) -> dict[str, Any]:
        classes, groups = await asyncio.gather(
            _all_pages(session, web, "assessment", f"/academies/{academy['academy_id']}/classes"),
            _all_pages(session, web, "assessment", f"/academies/{academy['academy_id']}/groups"))
        return {"name": academy["name"], "classes": classes, "groups": groups}

    places = await asyncio.gather(*(targets(a) for a in academies))
    return render(request, "screening/choose.html", {"places": places, "frameworks": frameworks})


@router.get("/screening/new", response_class=HTMLResponse)
async def new(request: Request, session: SignedIn, target: str = "", framework: str = "") -> Response:
    web = web_of(request)
    kind, _, target_id = target.partition(":")
    if kind not in ("class", "group") or not target_id or not framework:
        return RedirectResponse("/screening?missing=1", status_code=303)
    content = await web.api.get(session, "assessment", f"/frameworks/{framework}")
    return render(request, "screening/new.html", {"kind": kind, "target_id": target_id, "framework": content})


@router.post("/screening/new", response_class=HTMLResponse)
async def start(request: Request, session: SignedIn, form: CheckedForm) -> Response:
    web = web_of(request)
    kind, target_id, version = str(form.get("kind", "")), str(form.get("target_id", "")), str(form.get("framework", ""))
    strands = [str(s) for s in form.getlist("strands")]
    body = {f"{kind}_id": target_id, "framework_version": version, "strands": strands}
    try:
        if kind not in ("class", "group"):
            raise ApiError(422, "Choose a class or a group")
        started = await web.api.post(session, "assessment", "/assessments", json=body,
                                     idempotency_key=str(form["idempotency_key"]))
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        content = await web.api.get(session, "assessment", f"/frameworks/{version}")
        messages = ["Choose at least one strand to screen"] if not strands else exc.messages
        return render(request, "screening/new.html", {"kind": kind, "target_id": target_id, "framework": content},
                      errors=messages, status=422)
    return RedirectResponse(f"/screening/{started['screening_id']}", status_code=303)


# --- The grid -------------------------------------------------------------------------------------


@router.get("/screening/{screening_id}", response_class=HTMLResponse)
async def grid(request: Request, session: SignedIn, screening_id: str, saved: int | None = None) -> HTMLResponse:
    context = await _grid(session, web_of(request), screening_id)
    return render(request, "screening/grid.html", {**context, "saved": saved,
                                                    "observed_at": datetime.now(UTC).isoformat()})


@router.post("/screening/{screening_id}/cell", response_class=HTMLResponse)
async def save_cell(request: Request, session: SignedIn, form: CheckedForm, screening_id: str) -> HTMLResponse:
    """One cell, as the user changes it (htmx): the cell's status comes back, never a whole page.
    The key is the form's key, the cell, the level and the page's edit counter: a resent request is
    applied once, and changing a cell back to an earlier level is a new rating."""
    web = web_of(request)
    cells = _cell_fields(form)
    trigger = request.headers.get("hx-trigger-name")
    if trigger:  # htmx names the cell that changed
        cells = [c for c in cells if "|".join(c[:3]) == trigger]
    if len(cells) != 1:
        return render(request, "screening/_status.html", {"ok": False, "message": "Not saved: no cell was sent"})
    pupil_id, assessment_id, statement_id, level = cells[0]
    if level not in LEVEL_NAMES:
        return render(request, "screening/_status.html",
                      {"ok": False, "message": "Not saved: choose Rarely, Emerging, Developing or Secure"})
    edit = str(form.get("edit", "0"))[:80]
    body = {"pupil_id": pupil_id, "statement_id": statement_id, "level": level, "assessment_id": assessment_id,
            "observed_at": datetime.now(UTC).isoformat()}
    try:
        await web.api.post(session, "assessment", "/observations", json=body,
                           idempotency_key=idempotency_key_for(form, assessment_id, statement_id, level, edit))
    except ApiError as exc:
        if exc.status == 401:
            raise
        return render(request, "screening/_status.html", {"ok": False, "message": "Not saved: " + "; ".join(exc.messages)})
    return render(request, "screening/_status.html", {"ok": True, "message": f"Saved: {LEVEL_NAMES[level]}"})


@router.post("/screening/{screening_id}", response_class=HTMLResponse)
async def save_grid(request: Request, session: SignedIn, form: CheckedForm, screening_id: str) -> Response:
    """Without JavaScript: the changed cells in one bulk request (all or none), then, for
    action=complete, the screening completed (all or none)."""
    web = web_of(request)
    context = await _grid(session, web, screening_id)
    current = {(r.assessment_id, s): lv for r in context["rows"] for s, lv in r.levels.items()}
    cells = [c for c in _cell_fields(form) if c[3]]
    errors = [f"{c[2]}: choose Rarely, Emerging, Developing or Secure" for c in cells if c[3] not in LEVEL_NAMES]
    try:
        observed_at = datetime.fromisoformat(str(form.get("observed_at", "")))
    except ValueError:
        errors.append("The form is not this page's: reload the page and try again")
        observed_at = datetime.now(UTC)
    changed = [c for c in cells if current.get((c[1], c[2])) != c[3]]
    saved = 0
    try:
        if errors:
            raise ApiError(422, "Some levels are not valid", errors[0], [{"msg": e} for e in errors[1:]])
        if changed:
            ratings = [{"pupil_id": p, "assessment_id": a, "statement_id": s, "level": lv} for p, a, s, lv in changed]
            done = await web.api.post(session, "assessment", "/observations/bulk",
                                      json={"observed_at": observed_at.isoformat(), "ratings": ratings},
                                      idempotency_key=idempotency_key_for(form, "bulk"))
            saved = int(done["recorded"])
        if form.get("action") == "complete":
            await web.api.post(session, "assessment", f"/screenings/{screening_id}/complete",
                               idempotency_key=idempotency_key_for(form, "complete"))
            return RedirectResponse(f"/screening/{screening_id}/profile", status_code=303)
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            raise
        context = await _grid(session, web, screening_id)  # what the server holds now
        return render(request, "screening/grid.html",
                      {**context, "saved": saved if saved else None, "observed_at": datetime.now(UTC).isoformat()},
                      errors=exc.messages, status=422)
    return RedirectResponse(f"/screening/{screening_id}?saved={saved}", status_code=303)


# --- The class profile ----------------------------------------------------------------------------


@router.get("/screening/{screening_id}/profile", response_class=HTMLResponse)
async def profile(request: Request, session: SignedIn, screening_id: str) -> HTMLResponse:
    web = web_of(request)
    data = await web.api.get(session, "assessment", f"/screenings/{screening_id}/profile")
    strand_names = {s["strand"]: s["name"] for s in data["strands"]}
    children = data["children"]
    charts = [bar_chart(
        "working-vs-expected", "Working at and expected for age, per strand",
        "For each strand: how many children are working at it, and how many are expected to be at it for their age.",
        [(f"{s['name']}: working at", s["working_at"]) for s in data["strands"]]
        + [(f"{s['name']}: expected", s["expected"]) for s in data["strands"]], unit="children")]
    for strand in data["strands"]:
        values = [(c["name"], c["strand_percents"][strand["strand"]]) for c in children
                  if strand["strand"] in c["strand_percents"]]
        if values:
            charts.append(bar_chart(
                f"percent-{strand['strand']}", f"{strand['name']}: each child's score",
                f"Each assessed child's {strand['name']} score in per cent; the strand is met at "
                f"{data['threshold_percent']:g}%. Flagged children are outlined.",
                values, unit="%", maximum=100, flagged=[c["name"] for c in children if c["flagged"]]))
    return render(request, "screening/profile.html", {
        "profile": data, "children": children, "strand_names": strand_names, "charts": charts,
        "flagged": [c for c in children if c["flagged"]], "screening_id": screening_id})


page = Page(
    name="screening", router=router,
    nav=(NavLink("Screening", "/screening", "Screen a class against a framework and read its class profile",
                 roles=SCREENERS),),
    demo=(("senco", "/screening"),),
    bench=(("senco", "/screening/{screening_id}"),),  # bench/web.py: a class of 30 × 45 statements, all rated
)
