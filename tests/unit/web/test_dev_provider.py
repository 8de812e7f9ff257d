"""The dev OpenID provider: codes single-use, short-lived, bound to the client, the redirect URI and
the PKCE challenge; PKCE S256 required; never in production."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from flourish.local.oidc import WEB_CLIENT_ID, create_app
from shared.auth import TokenVerifier
from shared.settings import Settings

REDIRECT = "http://web.test/auth/callback"
IDP = "http://idp.test"


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path, environment="development")


@pytest.fixture
async def idp(settings: Settings) -> httpx.AsyncClient:
    app = create_app(settings, {WEB_CLIENT_ID: [REDIRECT]}, public_url=IDP, code_ttl_s=5)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=IDP)


async def code_for(idp: httpx.AsyncClient, verifier: str, user: str = "senco", nonce: str = "n-1") -> str:
    params = {"client_id": WEB_CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "state": "s-1",
              "nonce": nonce, "code_challenge": s256(verifier), "code_challenge_method": "S256", "user": user}
    response = await idp.post("/authorize", data=params)
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["s-1"]
    return query["code"][0]


async def redeem(idp: httpx.AsyncClient, code: str, verifier: str, redirect: str = REDIRECT,
                 client: str = WEB_CLIENT_ID) -> httpx.Response:
    return await idp.post("/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                                          "client_id": client, "code_verifier": verifier})


async def test_code_gives_tokens_the_services_accept(idp: httpx.AsyncClient, settings: Settings) -> None:
    verifier = secrets.token_urlsafe(48)
    response = await redeem(idp, await code_for(idp, verifier, nonce="n-42"), verifier)
    assert response.status_code == 200
    body = response.json()
    principal = TokenVerifier(settings).verify(body["access_token"])
    assert {role.value for role in principal.roles} == {"senco"} and len(principal.academy_ids) == 1
    id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert id_claims["aud"] == WEB_CLIENT_ID and id_claims["nonce"] == "n-42" and id_claims["name"] == "Sam Okafor"
    discovery = (await idp.get("/.well-known/openid-configuration")).json()
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert (await idp.get("/jwks")).json()["keys"][0]["kid"]


async def test_a_replayed_code_is_refused(idp: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await code_for(idp, verifier)
    assert (await redeem(idp, code, verifier)).status_code == 200
    replay = await redeem(idp, code, verifier)
    assert replay.status_code == 400 and replay.json() == {"error": "invalid_grant"}


async def test_a_wrong_verifier_burns_the_code(idp: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await code_for(idp, verifier)
    assert (await redeem(idp, code, secrets.token_urlsafe(48))).json() == {"error": "invalid_grant"}
    # Single use even when the first try failed: the right verifier cannot follow a guess.
    assert (await redeem(idp, code, verifier)).status_code == 400


async def test_another_redirect_or_client_is_refused(idp: httpx.AsyncClient) -> None:
    verifier = secrets.token_urlsafe(48)
    assert (await redeem(idp, await code_for(idp, verifier), verifier,
                         redirect="http://evil.test/auth/callback")).status_code == 400
    assert (await redeem(idp, await code_for(idp, verifier), verifier, client="other")).status_code == 400


async def test_unregistered_redirect_is_never_redirected_to(idp: httpx.AsyncClient) -> None:
    params = {"client_id": WEB_CLIENT_ID, "redirect_uri": "http://evil.test/cb", "response_type": "code",
              "code_challenge": s256("x" * 50), "code_challenge_method": "S256"}
    response = await idp.get("/authorize", params=params)
    assert response.status_code == 400 and "location" not in response.headers


async def test_pkce_plain_or_missing_is_refused(idp: httpx.AsyncClient) -> None:
    base = {"client_id": WEB_CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code", "state": "s"}
    for extra in ({}, {"code_challenge": "x" * 50, "code_challenge_method": "plain"}):
        response = await idp.get("/authorize", params={**base, **extra})
        assert response.status_code == 303
        assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["invalid_request"]


async def test_an_expired_code_is_refused(settings: Settings) -> None:
    app = create_app(settings, {WEB_CLIENT_ID: [REDIRECT]}, public_url=IDP, code_ttl_s=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=IDP) as idp:
        verifier = secrets.token_urlsafe(48)
        assert (await redeem(idp, await code_for(idp, verifier), verifier)).status_code == 400


def test_refuses_to_run_in_production(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="production"):
        create_app(Settings(state_dir=tmp_path, environment="production"), {WEB_CLIENT_ID: [REDIRECT]})
