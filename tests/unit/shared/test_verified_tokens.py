"""Bearer tokens remembered after verification (shared/verified_tokens.py): verified once within
the minute, never past their own expiry, roles still checked on every call."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from fastapi.security import HTTPAuthorizationCredentials

from shared.auth import Principal, Role
from shared.problems import Forbidden, Unauthenticated
from shared.verified_tokens import VerifiedTokens, requires_cached

SERVICE = Principal(subject="reporting", roles=frozenset({Role.service}), trust_id=uuid.uuid4())


class CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0

    def verify(self, token: str) -> Principal:
        self.calls += 1
        return SERVICE


def request_with(verifier: CountingVerifier) -> Any:
    runtime = SimpleNamespace(auth=SimpleNamespace(verifier=verifier))
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(runtime=runtime)))


def bearer(expires_in_s: float) -> HTTPAuthorizationCredentials:
    token = jwt.encode({"sub": "reporting", "exp": int(time.time() + expires_in_s), "n": uuid.uuid4().hex}, "k" * 32)
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


def test_a_token_is_verified_once_then_remembered() -> None:
    verifier, tokens, credentials = CountingVerifier(), VerifiedTokens(), bearer(3600)
    first = tokens.principal(request_with(verifier), credentials)
    second = tokens.principal(request_with(verifier), credentials)
    assert first is second is SERVICE and verifier.calls == 1


def test_a_token_is_not_remembered_past_the_cache_age() -> None:
    verifier, tokens, credentials = CountingVerifier(), VerifiedTokens(max_age_s=0.0), bearer(3600)
    tokens.principal(request_with(verifier), credentials)
    tokens.principal(request_with(verifier), credentials)
    assert verifier.calls == 2


def test_a_token_already_expired_by_its_claims_is_never_remembered() -> None:
    verifier, tokens, credentials = CountingVerifier(), VerifiedTokens(), bearer(-5)
    tokens.principal(request_with(verifier), credentials)
    tokens.principal(request_with(verifier), credentials)
    assert verifier.calls == 2


def test_no_token_is_401_and_a_remembered_token_without_the_role_is_403() -> None:
    with pytest.raises(Unauthenticated):
        VerifiedTokens().principal(request_with(CountingVerifier()), None)
    dependency = requires_cached(Role.dpo)
    with pytest.raises(Forbidden, match="this requires one of the roles: dpo"):
        dependency(request_with(CountingVerifier()), bearer(3600))
