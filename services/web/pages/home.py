"""The home page: who you are signed in as, and what you may do here (the navigation's links the
roles you hold make relevant; the APIs still decide every action)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.web.core import Page, SignedIn, render, web_of

router = APIRouter()

ROLE_NAMES = {"practitioner": "Practitioner", "senco": "SENCo", "trust_admin": "Trust administrator",
              "auditor": "Auditor", "dpo": "Data-protection officer", "admin": "Platform operator"}


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, session: SignedIn) -> HTMLResponse:
    links = [link for link in web_of(request).nav(session) if link.href != "/"]
    roles = [ROLE_NAMES.get(role, role) for role in session.roles]
    return render(request, "home/home.html", {"links": links, "roles": roles})


page = Page(name="home", router=router, demo=(("senco", "/"),), bench=(("senco", "/"),))
