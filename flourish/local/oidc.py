"""The dev OpenID Connect provider: sign in to the web locally as one of the demo trust's staff.

Development only (it refuses to start in production). It speaks just enough OpenID Connect for
the web's sign-in: discovery, `/authorize` (authorisation code with PKCE S256, nothing else) with
a page to pick a demo user, `/token` (code + verifier -> access token + id_token) and the JWKS.
Tokens are signed by the local dev issuer (shared/auth.py DevIssuer), whose keys the services
already trust, so the access token it issues is accepted by every API as it is.

Codes are single-use (taken out of the store before they are checked), live `code_ttl_s`, and are
bound to the client, the redirect URI and the PKCE challenge they were issued for.

`flourish platform up` serves it (`uvicorn --factory flourish.local.oidc:app`); the tests mount
`create_app` directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode
from uuid import UUID

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.assessment.demo import DEMO
from shared.auth import DevIssuer, Role
from shared.settings import Settings

WEB_CLIENT_ID = "flourish-web"
DEFAULT_PORT = 8106
CODE_TTL_S = 60.0

_OAK_HILL = DEMO.academies["Oak Hill Primary"]
_RIVERSIDE = DEMO.academies["Riverside Junior"]


@dataclass(frozen=True)
class DemoUser:
    key: str
    name: str
    job: str
    roles: tuple[Role, ...]
    academy_ids: tuple[UUID, ...] = ()

    @property
    def subject(self) -> str:
        return f"demo-{self.key}"  # pseudonymous, as a provider's `sub` is


# The demo trust's staff (services/assessment/demo.py's trust and academies), fictional people.
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("teacher", "Priya Shah", "Class teacher, Oak Hill Primary", (Role.practitioner,), (_OAK_HILL,)),
    DemoUser("senco", "Sam Okafor", "SENCo, Oak Hill Primary", (Role.senco,), (_OAK_HILL,)),
    DemoUser("riverside-senco", "Grace Lin", "SENCo, Riverside Junior", (Role.senco,), (_RIVERSIDE,)),
    DemoUser("dpo", "Daniel Reyes", "Data-protection officer, the trust", (Role.dpo,)),
    DemoUser("trust-admin", "Morgan Ellis", "Trust central team", (Role.trust_admin,)),
    DemoUser("operator", "Alex Carter", "Platform operator", (Role.admin,)),
)
USERS_BY_KEY = {user.key: user for user in DEMO_USERS}


@dataclass(frozen=True)
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    user: DemoUser
    expires_at: float


class _Codes:
    """Issued codes; `take` removes a code whatever happens next, so each is used at most once."""

    def __init__(self) -> None:
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.Lock()

    def put(self, grant: _Grant) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._grants = {c: g for c, g in self._grants.items() if g.expires_at > now}
            self._grants[code] = grant
        return code

    def take(self, code: str) -> _Grant | None:
        with self._lock:
            return self._grants.pop(code, None)


def create_app(
    settings: Settings,
    clients: Mapping[str, Sequence[str]],
    *,
    public_url: str | None = None,
    code_ttl_s: float = CODE_TTL_S,
    token_ttl: timedelta = timedelta(hours=1),
) -> FastAPI:
    """`clients`: client id -> its registered redirect URIs (exact matches only)."""
    if settings.environment == "production":
        raise RuntimeError("the dev OpenID provider refuses to run in production: "
                           "sign-in there goes to the trust's identity provider")
    issuer = DevIssuer(settings)
    codes = _Codes()
    app = FastAPI(title="Flourish dev OpenID provider", docs_url=None, redoc_url=None, openapi_url=None)

    def base(request: Request) -> str:
        return (public_url or str(request.base_url)).rstrip("/")

    @app.get("/.well-known/openid-configuration")
    def discovery(request: Request) -> dict[str, Any]:
        root = base(request)
        return {
            "issuer": settings.token_issuer,
            "authorization_endpoint": f"{root}/authorize",
            "token_endpoint": f"{root}/token",
            "jwks_uri": f"{root}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "scopes_supported": ["openid", "profile"],
            "token_endpoint_auth_methods_supported": ["none"],
        }

    @app.get("/readyz")
    @app.get("/healthz")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/jwks")
    def jwks() -> dict[str, Any]:
        return {"keys": [issuer.public_jwk]}

    def check_request(params: Mapping[str, str]) -> str | None:
        """Why the authorisation request is refused before anything is redirected, or None."""
        client_id = params.get("client_id", "")
        if client_id not in clients:
            return "unknown client"
        if params.get("redirect_uri", "") not in clients[client_id]:
            return "redirect URI not registered for this client"
        return None

    def redirect_error(params: Mapping[str, str], error: str) -> Response:
        query = {"error": error, **({"state": params["state"]} if params.get("state") else {})}
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(query)}", status_code=303)

    def check_pkce(params: Mapping[str, str]) -> str | None:
        if params.get("response_type") != "code":
            return "unsupported_response_type"
        if params.get("code_challenge_method") != "S256" or len(params.get("code_challenge", "")) < 43:
            return "invalid_request"  # PKCE S256 is required; `plain` is refused
        return None

    @app.get("/authorize", response_class=HTMLResponse)
    def authorize(request: Request) -> Response:
        params = dict(request.query_params)
        refused = check_request(params)
        if refused:
            return _page("Sign-in refused", f"<p>{html.escape(refused)}.</p>", status=400)
        error = check_pkce(params)
        if error:
            return redirect_error(params, error)
        return _page("Choose a demo user", _picker(params))

    @app.post("/authorize")
    async def pick(request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        refused = check_request(params)
        if refused:
            return _page("Sign-in refused", f"<p>{html.escape(refused)}.</p>", status=400)
        error = check_pkce(params)
        if error:
            return redirect_error(params, error)
        user = USERS_BY_KEY.get(params.get("user", ""))
        if user is None:
            return redirect_error(params, "access_denied")
        code = codes.put(_Grant(params["client_id"], params["redirect_uri"], params["code_challenge"],
                                params.get("nonce") or None, user, time.monotonic() + code_ttl_s))
        query = {"code": code, **({"state": params["state"]} if params.get("state") else {})}
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(query)}", status_code=303)

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if form.get("grant_type") != "authorization_code":
            return _token_error("unsupported_grant_type")
        grant = codes.take(form.get("code", ""))
        if grant is None or grant.expires_at <= time.monotonic():
            return _token_error("invalid_grant")  # unknown, used already, or expired
        if form.get("client_id") != grant.client_id or form.get("redirect_uri") != grant.redirect_uri:
            return _token_error("invalid_grant")
        if not hmac.compare_digest(_s256(form.get("code_verifier", "")), grant.challenge):
            return _token_error("invalid_grant")
        user = grant.user
        access = issuer.issue(user.subject, user.roles, DEMO.trust_id, user.academy_ids, ttl=token_ttl)
        now = int(time.time())
        id_claims: dict[str, Any] = {"iss": settings.token_issuer, "aud": grant.client_id, "sub": user.subject,
                                     "iat": now, "exp": now + int(token_ttl.total_seconds()), "name": user.name}
        if grant.nonce:
            id_claims["nonce"] = grant.nonce
        body = {"access_token": access, "id_token": issuer.sign(id_claims), "token_type": "Bearer",
                "expires_in": int(token_ttl.total_seconds())}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return app


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _token_error(error: str) -> Response:
    return JSONResponse({"error": error}, status_code=400, headers={"Cache-Control": "no-store"})


_PASSED_ON = ("client_id", "redirect_uri", "response_type", "state", "nonce", "code_challenge",
              "code_challenge_method", "scope")


def _picker(params: Mapping[str, str]) -> str:
    hidden = "".join(f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
                     for name in _PASSED_ON if name in params)
    rows = "".join(
        f'<li><form method="post" action="/authorize">{hidden}'
        f'<button type="submit" name="user" value="{html.escape(user.key)}">Sign in as {html.escape(user.name)}'
        f"</button> <span>{html.escape(user.job)}</span></form></li>"
        for user in DEMO_USERS)
    return ("<p>This is the local development sign-in: pick one of the demo trust's staff.</p>"
            f'<ul class="users">{rows}</ul>')


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
                f" - Flourish dev sign-in</title></head><body><main><h1>{html.escape(title)}</h1>{body}"
                "</main></body></html>")
    return HTMLResponse(document, status_code=status, headers={
        "Content-Security-Policy": "default-src 'none'; form-action *; frame-ancestors 'none'; base-uri 'none'",
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def app() -> FastAPI:
    """The factory uvicorn runs: FLOURISH_DEV_OIDC_REDIRECT_URIS (JSON list) are the web client's
    redirect URIs; FLOURISH_DEV_OIDC_URL the provider's own address."""
    redirect_uris = json.loads(os.environ.get("FLOURISH_DEV_OIDC_REDIRECT_URIS", "[]"))
    return create_app(Settings(), {WEB_CLIENT_ID: redirect_uris},
                      public_url=os.environ.get("FLOURISH_DEV_OIDC_URL"))
