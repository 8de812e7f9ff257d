"""Sign-in with OpenID Connect: authorisation code + PKCE (S256) against the configured provider,
state and nonce checked, the id_token verified (signature by the provider's JWKS, issuer, audience,
nonce). The access token is checked exactly as the services check it (shared/auth.py
TokenVerifier, with the configured claim mapping) to learn the user's roles, which the web uses only
to show or hide links. The web never mints a token."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from services.web.core import CsrfRefused, current_session, render, web_of
from services.web.session import SIGNIN_COOKIE, SIGNIN_TTL_S, Session
from services.web.settings import WebSettings
from shared.auth import ACCEPTED_ALGORITHMS, CLOCK_SKEW, parse_jwks
from shared.problems import Problem

_DISCOVERY_TTL_S = 3600.0


class SignInFailed(Exception):
    """The provider's answer could not be trusted or used; the user starts again."""


class OidcClient:
    def __init__(self, settings: WebSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.http = http
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._jwks: dict[str, jwt.PyJWK] = {}
        self._jwks_at = 0.0

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None or time.monotonic() - self._discovered_at > _DISCOVERY_TTL_S:
            try:
                response = await self.http.get(self.settings.oidc_discovery_url, timeout=5.0)
                response.raise_for_status()
                document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInFailed("the identity provider could not be reached") from exc
            self._discovery, self._discovered_at = document, time.monotonic()
        return self._discovery

    async def authorization_url(self, state: str, nonce: str, challenge: str) -> str:
        endpoint = (await self.discovery())["authorization_endpoint"]
        query = {"response_type": "code", "client_id": self.settings.client_id,
                 "redirect_uri": self.settings.redirect_uri, "scope": self.settings.scopes, "state": state,
                 "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"}
        return f"{endpoint}?{urlencode(query)}"

    async def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        endpoint = (await self.discovery())["token_endpoint"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_uri,
                "client_id": self.settings.client_id, "code_verifier": verifier}
        if self.settings.client_secret:
            form["client_secret"] = self.settings.client_secret
        try:
            response = await self.http.post(endpoint, data=form, timeout=10.0)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInFailed("the identity provider could not be reached") from exc
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            raise SignInFailed("the identity provider refused the sign-in")
        return body

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        discovery = await self.discovery()
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
            key = await self._key(str(kid), discovery["jwks_uri"])
            claims: dict[str, Any] = jwt.decode(
                id_token, key.key, algorithms=[key.algorithm_name], audience=self.settings.client_id,
                issuer=discovery["issuer"], leeway=CLOCK_SKEW, options={"require": ["iss", "aud", "sub", "exp", "iat"]})
        except (jwt.PyJWTError, KeyError) as exc:
            raise SignInFailed("the identity token is not valid") from exc
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInFailed("the identity token was not issued for this sign-in")
        return claims

    async def _key(self, kid: str, jwks_uri: str) -> jwt.PyJWK:
        if kid not in self._jwks and time.monotonic() - self._jwks_at > 30:
            try:
                response = await self.http.get(jwks_uri, timeout=5.0)
                response.raise_for_status()
                self._jwks, self._jwks_at = parse_jwks(response.json()), time.monotonic()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInFailed("the identity provider's keys could not be read") from exc
        key = self._jwks.get(kid)
        if key is None or key.algorithm_name not in ACCEPTED_ALGORITHMS:
            raise jwt.InvalidTokenError("unknown signing key")
        return key


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def local_path(target: str | None) -> str:
    """Only a path on this site: never another origin (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


router = APIRouter()


@router.get("/sign-in")
async def sign_in(request: Request, next: str | None = None) -> Response:
    web = web_of(request)
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    try:
        url = await web.oidc.authorization_url(state, nonce, s256(verifier))
    except SignInFailed as exc:
        return render(request, "errors/error.html", {"title": "Sign-in is not available"}, status=503,
                      errors=[str(exc)])
    response = RedirectResponse(url, status_code=303)
    sealed = web.sealer.seal(SIGNIN_COOKIE, {"state": state, "nonce": nonce, "verifier": verifier,
                                            "next": local_path(next), "exp": time.time() + SIGNIN_TTL_S})
    response.set_cookie(SIGNIN_COOKIE, sealed, max_age=SIGNIN_TTL_S, path="/", httponly=True,
                        samesite="lax", secure=web.secure_cookies)
    return response


@router.get("/auth/callback")
async def callback(request: Request, code: str | None = None, state: str | None = None,
                   error: str | None = None) -> Response:
    web = web_of(request)
    started = web.sealer.open(SIGNIN_COOKIE, request.cookies.get(SIGNIN_COOKIE))
    if (started is None or float(started.get("exp", 0)) < time.time() or not state
            or not secrets.compare_digest(str(started.get("state", "")), state)):
        return _failed(request, "This sign-in was not started here or has expired.")
    if error or not code:
        return _failed(request, "The identity provider did not sign you in.")
    try:
        tokens = await web.oidc.exchange(code, str(started["verifier"]))
        id_claims = await web.oidc.verify_id_token(str(tokens.get("id_token", "")), str(started["nonce"]))
        access_token = str(tokens["access_token"])
        principal = await run_in_threadpool(web.verifier.verify, access_token)
    except (SignInFailed, Problem) as exc:
        return _failed(request, str(exc) if isinstance(exc, SignInFailed) else "Your account cannot use Flourish.")
    expires = jwt.decode(access_token, options={"verify_signature": False}).get("exp")
    expires_at = min(float(expires or 0) or time.time() + 300,
                     time.time() + float(tokens.get("expires_in", 3600)))
    session = Session(access_token=access_token, expires_at=expires_at, subject=principal.subject,
                      name=str(id_claims.get("name") or principal.subject),
                      roles=tuple(sorted(role.value for role in principal.roles)), trust_id=str(principal.trust_id),
                      academy_ids=tuple(sorted(str(a) for a in principal.academy_ids)))
    response = RedirectResponse(local_path(str(started.get("next"))), status_code=303)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    response.set_cookie(web.session_cookie, web.sealer.seal_session(session),
                        max_age=max(1, int(expires_at - time.time())), path="/", httponly=True,
                        samesite="lax", secure=web.secure_cookies)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    web = web_of(request)
    session = current_session(request)
    if session is not None:
        form = await request.form()
        token = form.get("csrf_token")
        if not isinstance(token, str) or not session.csrf_valid(token):
            raise CsrfRefused()
    response = RedirectResponse("/signed-out", status_code=303)
    response.delete_cookie(web.session_cookie, path="/", httponly=True, samesite="lax", secure=web.secure_cookies)
    return response


@router.get("/signed-out")
async def signed_out(request: Request) -> Response:
    return render(request, "signin/signed_out.html")


def _failed(request: Request, why: str) -> Response:
    response = render(request, "signin/failed.html", errors=[why], status=400)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response
