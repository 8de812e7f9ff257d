"""Bearer tokens remembered after verification (shared/verified_tokens.py), the cache behind every
`requires(...)`: verified once, never served past their own expiry, dropped when the signing keys
change (a rotation refuses a token signed by the removed key, cached or not), bounded (LRU), and a
token one service accepted is never taken on trust by another. With the real verifier and the dev
issuer's keys: nothing here is a stand-in for the signature check."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from fastapi.security import HTTPAuthorizationCredentials

from shared.api import requires
from shared.auth import DevIssuer, Role, TokenVerifier
from shared.problems import Forbidden, Unauthenticated
from shared.settings import Settings
from shared.verified_tokens import VerifiedTokens

TRUST = uuid.uuid4()


def settings_in(state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir, jwks_path=state_dir / "dev-issuer" / "jwks.json")


class Counting(TokenVerifier):
    """The real verifier, counting the signatures it checks."""

    calls = 0

    def verify(self, token: str) -> Any:
        self.calls += 1
        return super().verify(token)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_in(tmp_path)


@pytest.fixture
def issuer(settings: Settings) -> DevIssuer:
    return DevIssuer(settings)


def bearer(issuer: DevIssuer, ttl: timedelta = timedelta(hours=1), role: Role = Role.practitioner,
           ) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=issuer.issue("staff-1", [role], TRUST, ttl=ttl))


def request_with(tokens: VerifiedTokens) -> Any:
    runtime = SimpleNamespace(verified_tokens=tokens)
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(runtime=runtime)))


def test_a_token_is_verified_once_then_remembered(settings: Settings, issuer: DevIssuer) -> None:
    verifier = Counting(settings)
    tokens, credentials = VerifiedTokens(verifier), bearer(issuer)
    first, second = tokens.principal(credentials), tokens.principal(credentials)
    assert first == second and first.trust_id == TRUST and verifier.calls == 1


def test_an_expired_token_is_refused_even_if_cached(settings: Settings, issuer: DevIssuer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    shift = [0.0]

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + timedelta(seconds=shift[0])

    credentials = bearer(issuer, ttl=timedelta(minutes=5))
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)  # the verifier's clock, moved with the cache's
    tokens = VerifiedTokens(TokenVerifier(settings), clock=lambda: time.time() + shift[0])
    tokens.principal(credentials)
    assert tokens.cached(credentials.credentials) is not None

    shift[0] = 6 * 60.0 + 60  # past exp and the verifier's 30 s leeway
    assert tokens.cached(credentials.credentials) is None, "never served past the token's exp"
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.principal(credentials)


def test_after_a_key_rotation_a_token_signed_by_the_removed_key_is_refused(tmp_path: Path, settings: Settings,
                                                                           issuer: DevIssuer) -> None:
    verifier = Counting(settings)
    tokens, old = VerifiedTokens(verifier), bearer(issuer)
    tokens.principal(old)
    assert tokens.cached(old.credentials) is not None

    # The identity provider rotates: the JWKS now holds another key only.
    rotated = settings_in(tmp_path / "rotated")
    new_issuer = DevIssuer(rotated)
    time.sleep(0.01)  # a new mtime on coarse file systems
    shutil.copy(rotated.jwks_path, settings.jwks_path)
    assert json.loads(settings.jwks_path.read_text())["keys"][0]["kid"] != issuer.kid

    assert tokens.cached(old.credentials) is None, "the cached verification does not outlive its key"
    with pytest.raises(Unauthenticated, match="unknown key"):
        tokens.principal(old)
    fresh = HTTPAuthorizationCredentials(scheme="Bearer",
                                         credentials=new_issuer.issue("staff-1", [Role.practitioner], TRUST))
    assert tokens.principal(fresh).trust_id == TRUST
    assert len(tokens) == 1


def test_the_cache_is_bounded_least_recently_used_first(settings: Settings, issuer: DevIssuer) -> None:
    verifier = Counting(settings)
    tokens = VerifiedTokens(verifier, max_entries=2)
    a, b, c = bearer(issuer), bearer(issuer, ttl=timedelta(minutes=59)), bearer(issuer, ttl=timedelta(minutes=58))
    tokens.principal(a)
    tokens.principal(b)
    tokens.principal(a)  # a is the most recently used
    tokens.principal(c)  # b goes
    assert len(tokens) == 2 and tokens.cached(a.credentials) and tokens.cached(c.credentials)
    assert tokens.cached(b.credentials) is None


def test_no_token_is_401_and_a_remembered_token_without_the_role_is_403(settings: Settings,
                                                                         issuer: DevIssuer) -> None:
    tokens = VerifiedTokens(TokenVerifier(settings))
    with pytest.raises(Unauthenticated):
        tokens.principal(None)
    credentials = bearer(issuer)
    tokens.principal(credentials)
    from shared.api import caller

    async def as_dpo() -> Any:
        principal = await caller(request_with(tokens), credentials)  # type: ignore[arg-type]
        return await requires(Role.dpo)(principal)

    with pytest.raises(Forbidden, match="this requires one of the roles: dpo"):
        asyncio.run(as_dpo())


def test_a_token_one_service_accepted_is_not_taken_on_trust_by_another(tmp_path: Path, settings: Settings,
                                                                       issuer: DevIssuer) -> None:
    """Two services in one process, each with its own identity provider: the one whose provider
    never signed the token refuses it, even right after the other accepted and remembered it."""
    elsewhere = settings_in(tmp_path / "elsewhere")
    DevIssuer(elsewhere)
    accepting, refusing = VerifiedTokens(TokenVerifier(settings)), VerifiedTokens(TokenVerifier(elsewhere))
    credentials = bearer(issuer)
    assert accepting.principal(credentials).trust_id == TRUST
    with pytest.raises(Unauthenticated):
        refusing.principal(credentials)
