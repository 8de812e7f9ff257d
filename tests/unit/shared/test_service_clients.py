"""Issue 17: which service calls is part of a `service` token (its client_id, mapped by
FLOURISH_SERVICE_CLIENTS); a token without a known client is refused and counted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from shared.auth import DevIssuer, Role, TokenVerifier
from shared.peers import ServiceTokens
from shared.problems import Unauthenticated
from shared.settings import Settings

TRUST = uuid.uuid4()


def settings_in(state_dir: Path, **more: object) -> Settings:
    return Settings(state_dir=state_dir, jwks_path=state_dir / "dev-issuer" / "jwks.json", **more)


def refused() -> float:
    return REGISTRY.get_sample_value("flourish_security_refusals_total", {"kind": "unknown_service_client"}) or 0.0


async def test_a_service_token_carries_its_services_client(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    principal = TokenVerifier(settings).verify(await ServiceTokens(settings, "reporting").for_trust(TRUST))
    assert principal.client == "reporting" and principal.subject == "service:reporting"
    assert jwt.decode(await ServiceTokens(settings, "planning").for_trust(TRUST),
                      options={"verify_signature": False})["client_id"] == "planning"


def test_a_service_token_without_a_known_client_is_refused_and_counted(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    issuer, verifier = DevIssuer(settings), TokenVerifier(settings)
    before = refused()
    for client in (None, "rogue", ""):
        with pytest.raises(Unauthenticated, match="known Flourish service client"):
            verifier.verify(issuer.issue("service:reporting", [Role.service], TRUST, client=client))
    assert refused() - before == 3
    # People need no client; a staff token naming one is still a person's (no service identity).
    staff = verifier.verify(issuer.issue("senco-1", [Role.senco], TRUST, [uuid.uuid4()], client="web"))
    assert staff.client is None


def test_azp_names_the_client_when_client_id_is_absent(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, service_clients={"0oa-reporting-prod": "reporting"})
    issuer = DevIssuer(settings)
    now = datetime.now(UTC)
    claims = {"iss": settings.token_issuer, "aud": settings.token_audience, "sub": "svc", "iat": now,
              "exp": now + timedelta(minutes=5), "roles": ["service"], "trust_id": str(TRUST), "azp": "0oa-reporting-prod"}
    token = jwt.encode(claims, issuer._private_key, algorithm="EdDSA", headers={"kid": issuer.kid})  # noqa: SLF001
    assert TokenVerifier(settings).verify(token).client == "reporting"


def test_in_production_only_the_configured_clients_are_known(tmp_path: Path) -> None:
    development = settings_in(tmp_path, service_clients={"0oa-plan": "planning"})
    assert development.known_service_clients() == {"assessment": "assessment", "consent": "consent",
                                                   "planning": "planning", "reporting": "reporting",
                                                   "0oa-plan": "planning"}
    production = development.model_copy(update={"environment": "production"})
    assert production.known_service_clients() == {"0oa-plan": "planning"}


def test_a_client_mapped_to_no_service_is_refused_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOURISH_SERVICE_CLIENTS", '{"0oa-x": "billing"}')
    with pytest.raises(ValidationError, match="unknown services"):
        Settings(state_dir=tmp_path)
    monkeypatch.setenv("FLOURISH_SERVICE_CLIENTS", '{"0oa-x": "consent"}')
    assert Settings(state_dir=tmp_path).service_clients == {"0oa-x": "consent"}


def test_flourish_dev_token_issues_a_service_token_for_a_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flourish.cli import app

    monkeypatch.setenv("FLOURISH_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("FLOURISH_JWKS_URL", raising=False)
    monkeypatch.setenv("FLOURISH_ENVIRONMENT", "development")
    result = CliRunner().invoke(app, ["dev-token", "--role", "service", "--trust", str(TRUST), "--client", "reporting"])
    assert result.exit_code == 0, result.output
    principal = TokenVerifier(settings_in(tmp_path)).verify(result.stdout.strip())
    assert principal.client == "reporting" and principal.roles == {Role.service}
