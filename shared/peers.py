"""Calling another Flourish service: a bearer token of role `service` for one trust, and its URL.

In development the local dev issuer signs the token, with `client_id` = the service's name. In
production the trust's identity provider issues it through the OAuth 2.0 client-credentials grant
(FLOURISH_SERVICE_TOKEN_URL, _CLIENT_ID, _CLIENT_SECRET: each service's deployment has a client
of its own), with the trust named in the requested scope; the dev issuer is never used there. The
receiving service learns which service calls from the token's `client_id`, mapped by
FLOURISH_SERVICE_CLIENTS (shared/auth.py `Principal.client`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import httpx

from shared.auth import DevIssuer, Role
from shared.settings import Settings

# A token is reused until this long before it expires.
_REFRESH_MARGIN_S = 60.0


@dataclass
class _Token:
    value: str
    expires_at: float


class ServiceTokens:
    """`await tokens.for_trust(trust_id)`: a cached service token for that trust."""

    def __init__(self, settings: Settings, service: str, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.service = service
        self.subject = f"service:{service}"
        self._http = http
        self._cache: dict[UUID, _Token] = {}

    async def for_trust(self, trust_id: UUID) -> str:
        cached = self._cache.get(trust_id)
        if cached is not None and cached.expires_at - _REFRESH_MARGIN_S > time.monotonic():
            return cached.value
        token = await self._fetch(trust_id)
        self._cache[trust_id] = token
        return token.value

    async def _fetch(self, trust_id: UUID) -> _Token:
        if self.settings.service_token_url:
            return await self._client_credentials(trust_id)
        if self.settings.environment == "production":
            raise RuntimeError("FLOURISH_SERVICE_TOKEN_URL is required in production")
        ttl = timedelta(minutes=15)
        value = DevIssuer(self.settings).issue(self.subject, [Role.service], trust_id, ttl=ttl, client=self.service)
        return _Token(value, time.monotonic() + ttl.total_seconds())

    async def _client_credentials(self, trust_id: UUID) -> _Token:
        http = self._http or httpx.AsyncClient(timeout=5.0)
        try:
            response = await http.post(
                str(self.settings.service_token_url),
                data={"grant_type": "client_credentials", "scope": f"flourish trust:{trust_id}"},
                auth=(self.settings.service_client_id or "", self.settings.service_client_secret or ""),
            )
            response.raise_for_status()
            body = response.json()
        finally:
            if self._http is None:
                await http.aclose()
        return _Token(body["access_token"], time.monotonic() + float(body.get("expires_in", 300)))
