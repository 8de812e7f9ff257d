"""Bearer tokens already verified, remembered for at most a minute: for hot read paths only.

`requires_cached(*roles)` is `shared.api.requires` with the token's verification cached: a route
asked many times an hour with the same token (the consent service's sharing decision, asked twice
per share by a service holding one token for an hour) would otherwise spend a quarter of its
latency on the signature. Every other route keeps `shared.api.requires`.

Each running service holds its own cache (`Runtime.verified_tokens`, over its own verifier): a
token one service (or one app in a test process) accepted is never taken on trust by another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth import Principal, Role, TokenVerifier
from shared.problems import Forbidden, Unauthenticated


class VerifiedTokens:
    """Bearer tokens already verified, for at most `max_age_s` (and never past their expiry).

    A key withdrawn from the JWKS stops being honoured for a cached token within `max_age_s`.
    """

    def __init__(self, verifier: TokenVerifier, max_entries: int = 4096, max_age_s: float = 60.0) -> None:
        self._verifier = verifier
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._max_entries = max_entries
        self._max_age_s = max_age_s

    def principal(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if credentials is None:
            raise Unauthenticated.missing_token()
        token = credentials.credentials
        now = time.monotonic()
        cached = self._entries.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = self._verifier.verify(token)  # raises 401 if not valid
        claims = jwt.decode(token, options={"verify_signature": False})
        lifetime = min(self._max_age_s, float(claims["exp"]) - time.time())
        if lifetime > 0:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()  # simple and bounded; a refill costs one verification each
            self._entries[token] = (principal, now + lifetime)
        return principal


_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT")


def requires_cached(*roles: Role) -> Callable[..., Principal]:
    """Like shared.api.requires, with verified tokens remembered briefly (hot read paths only)."""
    wanted = ", ".join(sorted(roles))

    def with_role(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        tokens: VerifiedTokens = request.app.state.runtime.verified_tokens
        principal = tokens.principal(credentials)
        if not principal.has_role(*roles):
            raise Forbidden(f"this requires one of the roles: {wanted}")
        return principal.acting_as(roles)  # trust-wide only through a trust role this route accepts

    return with_role
