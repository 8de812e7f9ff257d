"""The web and the dev OpenID provider in-process, talking over ASGI transports (no sockets)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from flourish.local.oidc import WEB_CLIENT_ID
from flourish.local.oidc import create_app as provider_app
from services.web.app import create_app as web_app
from services.web.settings import WebSettings
from shared.settings import Settings

WEB = "http://web.test"
IDP = "http://idp.test"


@dataclass
class Rig:
    browser: httpx.AsyncClient
    provider: FastAPI
    web: FastAPI
    settings: WebSettings

    async def sign_in(self, user: str = "senco") -> httpx.Response:
        """Through the provider's pick-a-user page, as a browser does; the home page's answer."""
        response = await self.browser.get(f"{WEB}/", follow_redirects=True)
        form = picker_form(response.text, user)
        response = await self.browser.post(f"{IDP}/authorize", data=form, follow_redirects=True)
        assert response.status_code == 200, response.text
        return response


def picker_form(page: str, user: str) -> dict[str, str]:
    for form in re.findall(r'<form method="post" action="/authorize">(.*?)</form>', page, re.S):
        fields = {name: unescape(value) for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', form)}
        if fields.get("user") == user:
            return fields
    raise AssertionError(f"no demo user {user} on the page")


def form_fields(page: str) -> dict[str, str]:
    return {name: unescape(value) for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', page)}


@pytest.fixture
def kernel_settings(tmp_path: Path) -> Settings:
    # No service listens on port 9: pages calling an API get "not available", never a live platform.
    return Settings(state_dir=tmp_path, environment="development",
                    **{f"{name}_url": "http://127.0.0.1:9" for name in ("assessment", "planning", "consent", "reporting")})


@pytest.fixture
async def rig(kernel_settings: Settings) -> AsyncIterator[Rig]:
    settings = WebSettings(oidc_discovery_url=f"{IDP}/.well-known/openid-configuration", public_url=WEB)
    provider = provider_app(kernel_settings, {WEB_CLIENT_ID: [settings.redirect_uri]}, public_url=IDP)
    inner = httpx.AsyncClient(mounts={IDP: httpx.ASGITransport(provider)})
    web = web_app(settings, kernel_settings, http=inner)
    async with httpx.AsyncClient(mounts={IDP: httpx.ASGITransport(provider), WEB: httpx.ASGITransport(web)}) as browser:
        yield Rig(browser, provider, web, settings)
    await inner.aclose()
