"""The home page: who you are signed in as, and what you may do here (the navigation's links the
roles you hold make relevant; the APIs still decide every action)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.web.api import ApiError
from services.web.core import Page, SignedIn, render, web_of

router = APIRouter()

ROLE_NAMES = {"practitioner": "Practitioner", "senco": "SENCo", "trust_admin": "Trust administrator",
              "auditor": "Auditor", "dpo": "Data-protection officer", "admin": "Platform operator"}


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, session: SignedIn) -> HTMLResponse:
    web = web_of(request)
    links = [link for link in web.nav(session) if link.href != "/"]
    roles = [ROLE_NAMES.get(role, role) for role in session.roles]
    errors: list[str] = []
    try:
        # The academies the API says this user reaches (their token's scope, not the web's idea of it).
        academies = [item["name"] for item in (await web.api.get(session, "assessment", "/academies",
                                                                 params={"limit": 50}))["items"]]
    except ApiError as exc:
        if exc.status == 401:
            raise
        academies, errors = [], exc.messages
    return render(request, "home/home.html", {"links": links, "roles": roles, "academies": academies},
                  errors=errors)


page = Page(name="home", router=router, demo=(("senco", "/"),), bench=(("senco", "/"),))
