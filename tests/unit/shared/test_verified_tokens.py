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


class RefusingVerifier:
    """A service whose identity provider never signed the token."""

    def verify(self, token: str) -> Principal:
        raise Unauthenticated("the token's signature does not verify")


def request_with(tokens: VerifiedTokens) -> Any:
    """A request to a running service whose verified-token cache is `tokens`."""
    runtime = SimpleNamespace(verified_tokens=tokens)
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(runtime=runtime)))


def bearer(expires_in_s: float) -> HTTPAuthorizationCredentials:
    token = jwt.encode({"sub": "reporting", "exp": int(time.time() + expires_in_s), "n": uuid.uuid4().hex}, "k" * 32)
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


def test_a_token_is_verified_once_then_remembered() -> None:
    verifier, credentials = CountingVerifier(), bearer(3600)
    tokens = VerifiedTokens(verifier)
    first = tokens.principal(credentials)
    second = tokens.principal(credentials)
    assert first is second is SERVICE and verifier.calls == 1


def test_a_token_is_not_remembered_past_the_cache_age() -> None:
    verifier, credentials = CountingVerifier(), bearer(3600)
    tokens = VerifiedTokens(verifier, max_age_s=0.0)
    tokens.principal(credentials)
    tokens.principal(credentials)
    assert verifier.calls == 2


def test_a_token_already_expired_by_its_claims_is_never_remembered() -> None:
    verifier, credentials = CountingVerifier(), bearer(-5)
    tokens = VerifiedTokens(verifier)
    tokens.principal(credentials)
    tokens.principal(credentials)
    assert verifier.calls == 2


def test_no_token_is_401_and_a_remembered_token_without_the_role_is_403() -> None:
    with pytest.raises(Unauthenticated):
        VerifiedTokens(CountingVerifier()).principal(None)
    dependency = requires_cached(Role.dpo)
    with pytest.raises(Forbidden, match="this requires one of the roles: dpo"):
        dependency(request_with(VerifiedTokens(CountingVerifier())), bearer(3600))


def test_a_token_one_service_accepted_is_not_taken_on_trust_by_another() -> None:
    """Two services in one process (or two apps in one test run), each with its own identity
    provider: the one whose provider never signed the token refuses it, even right after the other
    accepted and remembered it."""
    dependency, credentials = requires_cached(Role.service), bearer(3600)
    accepting = request_with(VerifiedTokens(CountingVerifier()))
    refusing = request_with(VerifiedTokens(RefusingVerifier()))
    assert dependency(accepting, credentials) is SERVICE
    with pytest.raises(Unauthenticated, match="does not verify"):
        dependency(refusing, credentials)
