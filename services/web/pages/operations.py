"""The ops page for operators (issue 20, item 3): the services' ops summary behind the web's sign-in,
and links to the Grafana dashboards.

The reporting service's `/ops.json` gathers every service's figures (lag, dead letters, outbox
backlog, webhook failures, audit status, notices, refusals) from their metrics; it holds no
personal data and asks for no token (the NetworkPolicy decides its callers; no ingress publishes
it). The web reads the same figures from `/ops/summary`, which takes the user's token and answers
the `admin` role (the platform operator) only: the API decides, and the web hides its link from
everyone else.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.web.api import ApiError
from services.web.core import NavLink, Page, SignedIn, render, web_of

router = APIRouter()

OPERATORS = frozenset({"admin"})
# The dashboards deploy/k8s/monitoring/dashboards/ provisions (uid, title, file): the web's image
# carries no deploy/, so they are named here; tests/unit/web/test_admin_pages.py checks they match.
DASHBOARDS: tuple[tuple[str, str, str], ...] = (
    ("flourish-api", "Flourish — APIs", "deploy/k8s/monitoring/dashboards/flourish-api.json"),
    ("flourish-platform", "Flourish — events, consumers and audit",
     "deploy/k8s/monitoring/dashboards/flourish-platform.json"),
)


def dashboard_links(grafana_url: str | None) -> list[dict[str, str | None]]:
    """Each dashboard's title, file and, given FLOURISH_WEB_GRAFANA_URL, its address in Grafana."""
    base = (grafana_url or "").strip().rstrip("/")
    if not base.startswith(("https://", "http://")):
        base = ""
    return [{"uid": uid, "title": title, "path": path, "url": f"{base}/d/{uid}" if base else None}
            for uid, title, path in DASHBOARDS]


@router.get("/operations", response_class=HTMLResponse)
async def operations(request: Request, session: SignedIn) -> HTMLResponse:
    errors: list[str] = []
    services: list[dict[str, Any]] = []
    try:
        services = await web_of(request).api.get(session, "reporting", "/ops/summary")
    except ApiError as exc:
        if exc.status in (401, 403):  # the API decides who may see it: its refusal is the no-access page
            raise
        errors = exc.messages
    links = dashboard_links(web_of(request).settings.grafana_url)
    return render(request, "operations/operations.html", {"services": services, "dashboards": links},
                  errors=errors)


page = Page(
    name="operations", router=router,
    nav=(NavLink("Operations", "/operations", "Lag, dead letters, backlog and audit status of every service",
                 roles=OPERATORS),),
    demo=(("operator", "/operations"),),
)
