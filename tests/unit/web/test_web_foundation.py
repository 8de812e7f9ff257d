"""The web's foundation in-process: sign-in through the dev provider, the sealed session cookie,
CSRF on every POST, the security headers, API errors rendered as pages, the vendored assets."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from flourish.local.oidc import WEB_CLIENT_ID
from flourish.local.oidc import create_app as provider_app
from services.web.app import CONTENT_SECURITY_POLICY
from services.web.app import create_app as web_app
from services.web.core import CheckedForm, NavLink, Page, SignedIn, render, web_of
from services.web.pages import registered_pages
from services.web.session import SESSION_COOKIE, SIGNIN_COOKIE, Sealer, Session
from services.web.settings import WebSettings
from shared.settings import PROJECT_ROOT, Settings
from tests.unit.web.conftest import IDP, WEB, Rig, form_fields

API = "http://assessment.test"


async def test_sign_in_home_sign_out(rig: Rig) -> None:
    home = await rig.sign_in("senco")
    assert str(home.url) == f"{WEB}/" and "Welcome, Sam Okafor" in home.text and "SENCo" in home.text
    cookie = rig.browser.cookies.get(SESSION_COOKIE)
    assert cookie and "eyJ" not in cookie  # sealed: no token readable in it
    out = await rig.browser.post(f"{WEB}/sign-out", data=form_fields(home.text), follow_redirects=True)
    assert str(out.url) == f"{WEB}/signed-out" and rig.browser.cookies.get(SESSION_COOKIE) is None
    again = await rig.browser.get(f"{WEB}/")
    assert again.status_code == 303 and again.headers["location"].startswith("/sign-in")


async def test_session_cookie_flags(rig: Rig) -> None:
    response = await rig.browser.get(f"{WEB}/", follow_redirects=True)
    from tests.unit.web.conftest import picker_form
    callback = await rig.browser.post(f"{IDP}/authorize", data=picker_form(response.text, "dpo"))
    landed = await rig.browser.get(callback.headers["location"])
    set_cookie = [v for k, v in landed.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE)]
    assert set_cookie and "HttpOnly" in set_cookie[0] and "SameSite=lax" in set_cookie[0]


def test_production_needs_its_settings_and_seals_secure_host_cookies(tmp_path: Path) -> None:
    kernel = Settings(state_dir=tmp_path, environment="production")
    with pytest.raises(RuntimeError, match="FLOURISH_WEB_SESSION_KEY"):
        web_app(WebSettings(), kernel)
    kernel = Settings(state_dir=tmp_path, environment="production", jwks_url="https://idp.example/jwks")
    settings = WebSettings(session_key="a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleSE=",
                           public_url="https://web.example", oidc_discovery_url="https://idp.example/.well-known/x")
    web = web_app(settings, kernel).state.web
    assert web.secure_cookies and web.session_cookie == "__Host-flourish_session"
    assert not (tmp_path / "web").exists()  # no dev key made in production


async def test_state_mismatch_or_no_sign_in_cookie_is_refused(rig: Rig) -> None:
    response = await rig.browser.get(f"{WEB}/auth/callback", params={"code": "x", "state": "forged"})
    assert response.status_code == 400 and rig.browser.cookies.get(SESSION_COOKIE) is None
    await rig.browser.get(f"{WEB}/sign-in")  # a real sign-in started, then a forged state comes back
    response = await rig.browser.get(f"{WEB}/auth/callback", params={"code": "x", "state": "forged"})
    assert response.status_code == 400 and rig.browser.cookies.get(SESSION_COOKIE) is None


async def test_a_tampered_or_foreign_cookie_is_no_session(rig: Rig, kernel_settings: Settings) -> None:
    await rig.sign_in("senco")
    sealed = rig.browser.cookies[SESSION_COOKIE]
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    rig.browser.cookies.set(SESSION_COOKIE, flipped, domain="web.test")
    assert (await rig.browser.get(f"{WEB}/")).status_code == 303
    # A session sealed under another key, or a sign-in cookie replayed as a session, opens nothing.
    other = Sealer(b"k" * 32).seal_session(Session("t", time.time() + 60, "s", "Eve", ("dpo",), "t"))
    rig.browser.cookies.set(SESSION_COOKIE, other, domain="web.test")
    assert (await rig.browser.get(f"{WEB}/")).status_code == 303
    sealer: Sealer = rig.web.state.web.sealer
    rig.browser.cookies.set(SESSION_COOKIE, sealer.seal(SIGNIN_COOKIE, {"state": "x"}), domain="web.test")
    assert (await rig.browser.get(f"{WEB}/")).status_code == 303


async def test_an_expired_session_sends_you_to_sign_in(rig: Rig) -> None:
    sealer: Sealer = rig.web.state.web.sealer
    expired = Session("token", time.time() - 1, "demo-senco", "Sam", ("senco",), "trust")
    rig.browser.cookies.set(SESSION_COOKIE, sealer.seal_session(expired), domain="web.test")
    response = await rig.browser.get(f"{WEB}/?x=1")
    assert response.status_code == 303 and response.headers["location"] == "/sign-in?next=%2F%3Fx%3D1"


async def test_sign_in_never_redirects_off_site(rig: Rig) -> None:
    for target in ("https://evil.test/", "//evil.test/", "/\\evil.test"):
        start = await rig.browser.get(f"{WEB}/sign-in", params={"next": target})
        sealer: Sealer = rig.web.state.web.sealer
        assert sealer.open(SIGNIN_COOKIE, start.cookies[SIGNIN_COOKIE])["next"] == "/"  # type: ignore[index]


async def test_security_headers_on_every_response(rig: Rig) -> None:
    for path in ("/", "/signed-out", "/no-such-page", "/static/web.css"):
        response = await rig.browser.get(f"{WEB}{path}")
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        if not path.startswith("/static/"):
            assert response.headers["cache-control"] == "no-store"
    page = await rig.browser.get(f"{WEB}/signed-out")
    assert "<script>" not in page.text and " on" + "click=" not in page.text and "style=" not in page.text


# --- A page calling a (fake) API: CSRF, Idempotency-Key, problem+json -> pages ----------------------

calls: list[dict[str, Any]] = []


def fake_service() -> FastAPI:
    service = FastAPI()

    @service.post("/things")
    async def create(request: Request) -> Response:
        calls.append({"auth": request.headers.get("authorization"), "key": request.headers.get("idempotency-key")})
        return JSONResponse({"ok": True}, status_code=201)

    @service.get("/status/{code}")
    async def status(code: int) -> Response:
        return JSONResponse({"type": "about:blank", "title": "Refused", "status": code, "detail": f"because {code}",
                             "errors": [{"loc": ["body", "name"], "msg": "is required"}]},
                            status_code=code, media_type="application/problem+json")

    return service


def things_page() -> Page:
    router = APIRouter()

    @router.get("/things", response_class=HTMLResponse)
    async def form(request: Request, session: SignedIn) -> HTMLResponse:
        return render(request, "home/home.html", {"links": [], "roles": []})

    @router.post("/things")
    async def create(request: Request, session: SignedIn, form: CheckedForm) -> Response:
        await web_of(request).api.post(session, "assessment", "/things", json={}, idempotency_key=str(form["idempotency_key"]))
        return HTMLResponse("created")

    @router.get("/status/{code}")
    async def status(request: Request, session: SignedIn, code: int) -> Response:
        await web_of(request).api.get(session, "assessment", f"/status/{code}")
        return HTMLResponse("unreachable")

    return Page(name="things", router=router, nav=(NavLink("Things", "/things", roles=frozenset({"dpo"})),))


@pytest.fixture
async def api_rig(kernel_settings: Settings) -> Any:
    calls.clear()
    settings = WebSettings(oidc_discovery_url=f"{IDP}/.well-known/openid-configuration", public_url=WEB)
    provider = provider_app(kernel_settings, {WEB_CLIENT_ID: [settings.redirect_uri]}, public_url=IDP)
    inner = httpx.AsyncClient(mounts={IDP: httpx.ASGITransport(provider), API: httpx.ASGITransport(fake_service())})
    kernel = kernel_settings.model_copy(update={"assessment_url": API})
    web = web_app(settings, kernel, http=inner, pages=[*registered_pages(), things_page()])
    async with httpx.AsyncClient(mounts={IDP: httpx.ASGITransport(provider), WEB: httpx.ASGITransport(web)}) as browser:
        yield Rig(browser, provider, web, settings)


async def test_post_without_or_with_a_wrong_csrf_token_changes_nothing(api_rig: Rig) -> None:
    page = (await api_rig.sign_in("senco")).text
    fields = form_fields(page)
    for bad in ({**fields, "csrf_token": "forged"}, {"idempotency_key": fields["idempotency_key"]}):
        refused = await api_rig.browser.post(f"{WEB}/things", data=bad)
        assert refused.status_code == 403 and "Nothing was changed" in refused.text
    assert calls == []
    done = await api_rig.browser.post(f"{WEB}/things", data=fields)
    assert done.status_code == 200
    assert calls[0]["key"] == fields["idempotency_key"] and calls[0]["auth"].startswith("Bearer ey")


async def test_api_refusals_become_pages(api_rig: Rig) -> None:
    await api_rig.sign_in("senco")
    forbidden = await api_rig.browser.get(f"{WEB}/status/403")
    assert forbidden.status_code == 403 and "You do not have access" in forbidden.text
    missing = await api_rig.browser.get(f"{WEB}/status/404")
    assert missing.status_code == 404 and "Page not found" in missing.text
    invalid = await api_rig.browser.get(f"{WEB}/status/422")
    assert invalid.status_code == 422 and "govuk-error-summary" in invalid.text and "because 422" in invalid.text
    assert "name: is required" in invalid.text
    expired = await api_rig.browser.get(f"{WEB}/status/401")
    assert expired.status_code == 303 and expired.headers["location"].startswith("/sign-in")


async def test_a_malformed_address_is_a_page_not_json(api_rig: Rig) -> None:
    await api_rig.sign_in("senco")
    response = await api_rig.browser.get(f"{WEB}/status/not-a-number")
    assert response.status_code == 422 and "govuk-error-summary" in response.text
    assert response.headers["content-type"].startswith("text/html")


async def test_links_follow_roles_only_as_a_convenience(api_rig: Rig) -> None:
    senco_home = (await api_rig.sign_in("senco")).text
    assert 'href="/things"' not in senco_home
    api_rig.browser.cookies.clear()
    assert 'href="/things"' in (await api_rig.sign_in("dpo")).text


def test_vendored_assets_match_their_recorded_hashes() -> None:
    for folder in (PROJECT_ROOT / "services/web/static/vendor", PROJECT_ROOT / "tests/browser/vendor"):
        recorded = dict(reversed(line.split("  ", 1)) for line in (folder / "SHA256SUMS").read_text().splitlines())
        present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
        assert set(recorded) == present
        for name, digest in recorded.items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_derived_idempotency_keys_differ_per_command_and_repeat_per_double_submit() -> None:
    from starlette.datastructures import FormData

    from services.web.core import idempotency_key_for

    form = FormData({"idempotency_key": "0f0e8a52-9a61-4a53-8f7e-3a0d1f7e2b11"})
    assert idempotency_key_for(form, "pupil-1", "s1", "secure") == idempotency_key_for(form, "pupil-1", "s1", "secure")
    assert idempotency_key_for(form, "pupil-1", "s1", "secure") != idempotency_key_for(form, "pupil-1", "s2", "secure")
