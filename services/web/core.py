"""What every page stands on: the `Web` (settings, API client, templates, sign-in), the page
registry's `Page` and `NavLink`, and the dependencies a page's routes use:

    @router.get("/classes")
    async def classes(request: Request, session: SignedIn) -> HTMLResponse:
        data = await web_of(request).api.get(session, "assessment", "/...")
        return render(request, "classes/list.html", {"classes": data})

    @router.post("/classes/{class_id}/screening")
    async def save(request: Request, session: SignedIn, form: CheckedForm) -> Response:
        await web_of(request).api.post(session, "assessment", "/...", json=...,
                                       idempotency_key=form["idempotency_key"])

`CheckedForm` refuses a POST whose CSRF token is missing or wrong (403, nothing is called);
templates put `{{ form_protection() }}` inside every <form method="post"> (the CSRF token and a
fresh Idempotency-Key).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData

from services.web.session import SECURE_SESSION_COOKIE, SESSION_COOKIE, Session

if TYPE_CHECKING:
    from services.web.api import Api
    from services.web.session import Sealer
    from services.web.settings import WebSettings
    from services.web.signin import OidcClient
    from shared.auth import TokenVerifier
    from shared.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class NavLink:
    """A link in the navigation and on the home page. `roles`: shown only to users holding one of
    them (a convenience: the APIs decide what anyone may do); empty = every signed-in user."""

    label: str
    href: str
    description: str = ""
    roles: frozenset[str] = frozenset()

    def shown_to(self, session: Session | None) -> bool:
        return session is not None and (not self.roles or session.has_role(*self.roles))


@dataclass(frozen=True)
class Page:
    """One module of services/web/pages/: its routes, its navigation links, and the URLs the
    screenshots script visits as which demo user (key of flourish/local/oidc.py DEMO_USERS; a path
    may name {trust_id} and {academy_id}, the demo trust's first academy)."""

    name: str
    router: APIRouter
    nav: Sequence[NavLink] = ()
    demo: Sequence[tuple[str, str]] = ()
    # Served for the bench (bench/web.py): the paths to time as which demo user.
    bench: Sequence[tuple[str, str]] = ()


@dataclass
class Web:
    settings: WebSettings
    kernel: Settings
    sealer: Sealer
    api: Api
    oidc: OidcClient
    verifier: TokenVerifier
    pages: Sequence[Page]
    templates: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                                     undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    @property
    def secure_cookies(self) -> bool:
        return self.kernel.environment != "development"

    @property
    def session_cookie(self) -> str:
        return SECURE_SESSION_COOKIE if self.secure_cookies else SESSION_COOKIE

    def nav(self, session: Session | None) -> list[NavLink]:
        return [link for page in self.pages for link in page.nav if link.shown_to(session)]


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


class SignInRequired(Exception):
    """No session, or its token has expired: the user signs in again (then comes back here)."""


class CsrfRefused(Exception):
    """A POST without the form's CSRF token, or with a wrong one: refused, nothing called."""


def current_session(request: Request) -> Session | None:
    web = web_of(request)
    session = web.sealer.open_session(request.cookies.get(web.session_cookie))
    if session is None or session.expired:
        return None
    return session


def signed_in(request: Request) -> Session:
    session = current_session(request)
    if session is None:
        raise SignInRequired()
    request.state.session = session
    return session


async def checked_form(request: Request, session: Annotated[Session, Depends(signed_in)]) -> FormData:
    form = await request.form()
    token = form.get("csrf_token")
    if not isinstance(token, str) or not session.csrf_valid(token):
        raise CsrfRefused()
    key = form.get("idempotency_key")
    if not isinstance(key, str) or not _is_uuid(key):
        raise CsrfRefused()  # every form renders one; without it a double submit could apply twice
    return form


SignedIn = Annotated[Session, Depends(signed_in)]
CheckedForm = Annotated[FormData, Depends(checked_form)]


def idempotency_key_for(form: FormData, *parts: str) -> str:
    """A key derived from the form's Idempotency-Key and `parts` (a grid's cell and its value): one
    rendered form making several commands (save as you go) gives each its own key, and a double
    submit of the same command the same key. Pass what makes the command different."""
    base = uuid.UUID(str(form["idempotency_key"]))
    return str(uuid.uuid5(base, "/".join(parts)))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def render(request: Request, template: str, context: Mapping[str, Any] | None = None, *,
           status: int = 200, errors: Sequence[str] = ()) -> HTMLResponse:
    """A page: `template` under services/web/templates/ with the layout's context (the user, the
    navigation, `form_protection()`'s CSRF token and Idempotency-Key) and `errors` shown in the
    GOV.UK error summary."""
    web = web_of(request)
    session = getattr(request.state, "session", None) or current_session(request)
    page = web.templates.get_template(template).render({
        "request": request,
        "session": session,
        "nav": web.nav(session),
        "csrf_token": session.csrf if session else "",
        "new_idempotency_key": lambda: str(uuid.uuid4()),
        "error_messages": list(errors),
        **(context or {}),
    })
    return HTMLResponse(page, status_code=status)
