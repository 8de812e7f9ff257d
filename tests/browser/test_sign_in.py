"""The foundation in a real browser against the real platform: sign-in and sign-out through the
dev OpenID provider, the session cookie's flags, a tampered or expired session, CSRF, the CSP
(present, no inline script, no violation reported), axe clean on every page the foundation serves."""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import BrowserContext, Page

from services.web.session import SESSION_COOKIE
from tests.browser.support import BrowserPlatform, axe, signed_in


def csp_violations(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def test_sign_in_home_sign_out(platform: BrowserPlatform, page: Page) -> None:
    violations = csp_violations(page)
    page.goto(platform.web + "/")
    assert page.url.startswith(platform.oidc + "/authorize")  # not signed in: off to the provider
    axe(page)
    page.get_by_role("button", name="Sign in as Sam Okafor").click()
    page.wait_for_url(platform.web + "/")
    assert page.locator("h1").inner_text() == "Welcome, Sam Okafor"
    assert "SENCo" in page.locator("main").inner_text()
    axe(page)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(platform.web + "/signed-out")
    axe(page)
    assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    page.goto(platform.web + "/")
    assert page.url.startswith(platform.oidc + "/authorize")
    assert violations == []


def test_the_api_decides_what_the_user_reaches(platform: BrowserPlatform, page: Page, context: BrowserContext) -> None:
    """The home page lists the academies the assessment API returns for the user's own token: the
    Oak Hill teacher sees Oak Hill only, the trust's DPO both (the web never widens the scope)."""
    signed_in(page, platform, "teacher")
    text = page.locator("main").inner_text()
    assert "Oak Hill Primary" in text and "Riverside Junior" not in text
    context.clear_cookies()
    signed_in(page, platform, "dpo")
    text = page.locator("main").inner_text()
    assert "Oak Hill Primary" in text and "Riverside Junior" in text


def test_session_cookie_flags(platform: BrowserPlatform, page: Page, context: BrowserContext) -> None:
    signed_in(page, platform, "teacher")
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert "eyJ" not in cookie["value"]  # the token is sealed, not readable in the cookie
    assert page.evaluate("document.cookie") == ""  # no script reads it


def test_a_tampered_cookie_is_refused(platform: BrowserPlatform, page: Page, context: BrowserContext) -> None:
    signed_in(page, platform, "dpo")
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    value = cookie["value"]
    tampered = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    context.add_cookies([{**cookie, "value": tampered}])  # type: ignore[list-item]
    page.goto(platform.web + "/")
    assert page.url.startswith(platform.oidc + "/authorize")


def test_an_expired_session_sends_you_to_sign_in(platform: BrowserPlatform, page: Page,
                                                 context: BrowserContext) -> None:
    from services.web.session import Sealer, Session
    from services.web.settings import WebSettings, session_key

    signed_in(page, platform, "senco")
    sealer = Sealer(session_key(WebSettings(), platform.settings))
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    session = sealer.open_session(cookie["value"])
    assert session is not None
    expired = Session(**{**session.__dict__, "expires_at": time.time() - 5})
    context.add_cookies([{**cookie, "value": sealer.seal_session(expired)}])  # type: ignore[list-item]
    page.goto(platform.web + "/?from=expired")
    assert page.url.startswith(platform.oidc + "/authorize")
    page.get_by_role("button", name="Sign in as Sam Okafor").click()
    page.wait_for_url(platform.web + "/?from=expired")  # back where they were going


def test_csrf_refused_without_or_with_a_wrong_token(platform: BrowserPlatform, page: Page,
                                                    context: BrowserContext) -> None:
    signed_in(page, platform, "senco")
    for form in ({}, {"csrf_token": "forged"}):
        response = context.request.post(platform.web + "/sign-out", form=form)
        assert response.status == 403 and "Nothing was changed" in response.text()
    page.goto(platform.web + "/")
    assert page.locator("h1").inner_text() == "Welcome, Sam Okafor"  # still signed in: nothing changed


def test_csp_and_headers_on_every_page(platform: BrowserPlatform, page: Page) -> None:
    violations = csp_violations(page)
    signed_in(page, platform, "senco")
    for path in ("/", "/signed-out", "/no-such-page"):
        response = page.goto(platform.web + path)
        assert response is not None
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
        inline = page.evaluate("[...document.scripts].filter(s => !s.src).length")
        handlers = page.evaluate("[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
                                 ".some(a => a.name.startsWith('on') || a.name === 'style')).length")
        assert inline == 0 and handlers == 0, path
        axe(page)
    assert violations == []


def test_a_user_the_apis_refuse_sees_the_access_page(platform: BrowserPlatform, page: Page) -> None:
    """The web shows what the API says: a 404 page for an unknown path; the forbidden page is the
    screens' (each role matrix shows it); here the token passes through unchanged to the API."""
    signed_in(page, platform, "teacher")
    response = page.goto(platform.web + "/no-such-page")
    assert response is not None and response.status == 404
    assert page.locator("h1").inner_text() == "Page not found"
    # The web never mints tokens: the API it calls sees the token the provider issued.
    assert httpx.get(platform.api("assessment") + "/readyz").status_code == 200
