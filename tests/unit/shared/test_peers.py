"""Service tokens: the dev issuer signs them locally, one per trust, reused until near expiry."""

from __future__ import annotations

import uuid

import pytest

from shared.auth import Role, TokenVerifier
from shared.peers import ServiceTokens
from shared.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(state_dir=tmp_path, jwks_path=tmp_path / "dev-issuer" / "jwks.json")


async def test_a_service_token_names_the_service_and_reaches_the_whole_trust(settings):
    trust = uuid.uuid4()
    principal = TokenVerifier(settings).verify(await ServiceTokens(settings, "planning").for_trust(trust))
    assert principal.subject == "service:planning" and principal.roles == {Role.service}
    assert principal.trust_id == trust and principal.can_access(trust, uuid.uuid4())
    assert not principal.can_access(uuid.uuid4(), uuid.uuid4())


async def test_tokens_are_reused_per_trust(settings):
    tokens = ServiceTokens(settings, "planning")
    first, second = uuid.uuid4(), uuid.uuid4()
    assert await tokens.for_trust(first) == await tokens.for_trust(first)
    assert await tokens.for_trust(first) != await tokens.for_trust(second)


async def test_production_never_falls_back_to_the_dev_issuer(settings):
    production = settings.model_copy(update={"environment": "production"})
    with pytest.raises(RuntimeError, match="FLOURISH_SERVICE_TOKEN_URL is required"):
        await ServiceTokens(production, "planning").for_trust(uuid.uuid4())
