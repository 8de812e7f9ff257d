"""The start-up validation (shared/production.py): in production every required secret and setting
is checked before anything connects, and the one error names each missing or wrong item, never a
value. In development nothing is checked."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from services.assessment.app import AssessmentServiceSettings
from services.assessment.pupil_keys import AssessmentPrivacySettings
from services.consent.app import ConsentServiceSettings, ConsentSettings
from services.reporting.app import ReportingServiceSettings
from services.reporting.audit import AuditSettings
from shared.datakeys import DataKeySettings
from shared.production import ProductionMisconfigured, production_problems, validate_production
from shared.settings import Settings

SECRET = "kafka-password-value-never-shown"
KEY = base64.b64encode(os.urandom(32)).decode()


def production(tmp_path: Path, **changes: Any) -> Settings:
    """Production settings with everything the kernel needs, then `changes`."""
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    values: dict[str, Any] = {
        "environment": "production", "state_dir": tmp_path,
        "jwks_url": "https://login.trust.example/.well-known/jwks.json", "token_issuer": "https://login.trust.example",
        "service_client_id": "flourish-assessment", "service_client_secret": "client-secret-value",
        "service_token_url": "https://login.trust.example/oauth2/token",
        "mesh_mtls": True,
        "database_url": f"postgresql+asyncpg://assessment:pw@db.trust.example:5432/flourish"
                        f"?sslmode=verify-full&sslrootcert={ca}",
        "kafka_security_protocol": "SASL_SSL", "kafka_username": "assessment", "kafka_password": SECRET,
    }
    return Settings(**{**values, **changes})


def test_complete_production_settings_pass(tmp_path: Path) -> None:
    assert production_problems(production(tmp_path)) == []
    validate_production(production(tmp_path))


def test_development_checks_nothing(tmp_path: Path) -> None:
    validate_production(Settings(environment="development", state_dir=tmp_path), ["anything"])


@pytest.mark.parametrize(("changes", "named"), [
    ({"jwks_url": None}, "FLOURISH_JWKS_URL is missing"),
    ({"jwks_url": "http://login.trust.example/jwks.json"}, "FLOURISH_JWKS_URL must be an https URL"),
    ({"token_issuer": "flourish-dev"}, "FLOURISH_TOKEN_ISSUER"),
    ({"service_client_id": None}, "FLOURISH_SERVICE_CLIENT_ID is missing"),
    ({"service_client_secret": None}, "FLOURISH_SERVICE_CLIENT_SECRET is missing"),
    ({"service_token_url": None}, "FLOURISH_SERVICE_TOKEN_URL is missing"),
    ({"service_token_url": "http://login.trust.example/token"}, "FLOURISH_SERVICE_TOKEN_URL must be an https URL"),
    ({"mesh_mtls": False}, "FLOURISH_CONSENT_URL must be https"),
    ({"mesh_mtls": False, "consent_url": "https://consent.trust.example",
      "assessment_url": "https://a.trust.example", "planning_url": "https://p.trust.example"},
     "FLOURISH_REPORTING_URL must be https"),
    ({"database_url": "postgresql+asyncpg://assessment:pw@db.trust.example/flourish"}, "sslmode=verify-full"),
    ({"database_url": "postgresql+asyncpg://assessment:pw@db/flourish?sslmode=require&sslrootcert=/x"},
     "sslmode=verify-full"),
    ({"database_url": "postgresql+asyncpg://assessment:pw@db/flourish?sslmode=verify-ca&sslrootcert=/x"},
     "sslmode=verify-full"),
    ({"database_url": "postgresql+asyncpg://assessment:pw@db/flourish?sslmode=verify-full"}, "sslrootcert=<file>"),
    ({"database_url": "postgresql+asyncpg://assessment:pw@db/flourish?sslmode=verify-full&sslrootcert=/no/ca.crt"},
     "sslrootcert names no readable file"),
    ({"kafka_security_protocol": "PLAINTEXT"}, "FLOURISH_KAFKA_SECURITY_PROTOCOL must not be PLAINTEXT"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "mesh_mtls": False}, "SASL_PLAINTEXT sends events in clear"),
    ({"kafka_username": None}, "FLOURISH_KAFKA_USERNAME is missing"),
    ({"kafka_password": None}, "FLOURISH_KAFKA_PASSWORD is missing"),
])
def test_each_missing_or_wrong_setting_is_named(tmp_path: Path, changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ProductionMisconfigured) as refused:
        validate_production(production(tmp_path, **changes))
    assert named in str(refused.value)
    assert SECRET not in str(refused.value) and "client-secret-value" not in str(refused.value)


def test_one_error_names_everything_missing_not_the_first_only(tmp_path: Path) -> None:
    with pytest.raises(ProductionMisconfigured) as refused:
        validate_production(Settings(environment="production", state_dir=tmp_path), ["FLOURISH_LOOKUP_KEY is missing"])
    message = str(refused.value)
    for name in ("FLOURISH_JWKS_URL", "FLOURISH_TOKEN_ISSUER", "FLOURISH_SERVICE_CLIENT_ID",
                 "FLOURISH_SERVICE_CLIENT_SECRET", "FLOURISH_SERVICE_TOKEN_URL", "FLOURISH_CONSENT_URL",
                 "sslmode=verify-full", "sslrootcert", "FLOURISH_KAFKA_SECURITY_PROTOCOL", "FLOURISH_LOOKUP_KEY"):
        assert name in message
    assert len(refused.value.problems) >= 10


def test_the_migration_step_checks_the_database_only(tmp_path: Path) -> None:
    owner = Settings(environment="production", state_dir=tmp_path,
                     database_url="postgresql+asyncpg://owner:pw@db/flourish")
    with pytest.raises(ProductionMisconfigured) as refused:
        validate_production(owner, migration=True)
    assert all("DATABASE_URL" in problem for problem in refused.value.problems)
    validate_production(production(tmp_path, jwks_url=None, kafka_password=None), migration=True)


# --- Each service's own secrets ------------------------------------------------------------------


def test_consent_needs_its_kek(tmp_path: Path) -> None:
    kernel = production(tmp_path)
    assert ConsentServiceSettings(kernel=kernel, data_keys=DataKeySettings(data_kek=SecretStr(KEY))
                                  ).production_problems() == []
    assert ConsentServiceSettings(kernel=kernel, data_keys=DataKeySettings(data_kek=None)
                                  ).production_problems() == ["FLOURISH_DATA_KEK is missing"]
    short = base64.b64encode(b"too short").decode()
    assert ConsentServiceSettings(kernel=kernel, data_keys=DataKeySettings(data_kek=SecretStr(short))
                                  ).production_problems() == ["FLOURISH_DATA_KEK must be base64 of 32 random bytes"]
    assert ConsentServiceSettings(kernel=kernel, data_keys=DataKeySettings(data_kek=SecretStr("not base64!"))
                                  ).production_problems() == ["FLOURISH_DATA_KEK is not valid base64"]


def test_consent_subject_access_peers_over_https(tmp_path: Path) -> None:
    tree = ConsentServiceSettings(kernel=production(tmp_path, mesh_mtls=False),
                                  consent=ConsentSettings(subject_access_peers={"assessment": "http://assessment:8000"}),
                                  data_keys=DataKeySettings(data_kek=SecretStr(KEY)))
    assert any("FLOURISH_CONSENT_SUBJECT_ACCESS_PEERS" in problem for problem in tree.production_problems())


def _pem() -> str:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def test_reporting_needs_its_kek_and_audit_signing_key(tmp_path: Path) -> None:
    kernel = production(tmp_path)
    audit = AuditSettings(signing_key=SecretStr(_pem()), dev_key_path=tmp_path / "dev.pem")
    complete = ReportingServiceSettings(kernel=kernel, audit=audit, data_keys=DataKeySettings(data_kek=SecretStr(KEY)))
    assert complete.production_problems() == []
    missing = ReportingServiceSettings(kernel=kernel, audit=AuditSettings(signing_key=None, signing_key_path=None,
                                                                          dev_key_path=tmp_path / "dev.pem"),
                                       data_keys=DataKeySettings(data_kek=None))
    problems = " ".join(missing.production_problems())
    assert "FLOURISH_DATA_KEK is missing" in problems and "FLOURISH_AUDIT_SIGNING_KEY" in problems
    assert not (tmp_path / "dev.pem").exists()  # no development key was made in its place
    wrong = ReportingServiceSettings(kernel=kernel, audit=AuditSettings(signing_key=SecretStr("not a key")),
                                     data_keys=DataKeySettings(data_kek=SecretStr(KEY)))
    assert wrong.production_problems() == ["FLOURISH_AUDIT_SIGNING_KEY(_PATH) is not a readable Ed25519 private key (PEM)"]
    s3 = ReportingServiceSettings(kernel=kernel, audit=audit.model_copy(update={"witness": "s3", "s3_bucket": None}),
                                  data_keys=DataKeySettings(data_kek=SecretStr(KEY)))
    assert s3.production_problems() == ["FLOURISH_AUDIT_S3_BUCKET is missing (FLOURISH_AUDIT_WITNESS=s3)"]


def test_assessment_needs_its_lookup_key(tmp_path: Path) -> None:
    kernel = production(tmp_path)
    assert AssessmentServiceSettings(kernel=kernel, privacy=AssessmentPrivacySettings(lookup_key=SecretStr(KEY))
                                     ).production_problems() == []
    assert AssessmentServiceSettings(kernel=kernel, privacy=AssessmentPrivacySettings(lookup_key=None)
                                     ).production_problems() == ["FLOURISH_LOOKUP_KEY is missing"]


def test_flourish_migrate_refuses_a_database_url_without_verified_tls(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flourish.cli import app as cli

    monkeypatch.setenv("FLOURISH_ENVIRONMENT", "production")
    monkeypatch.setenv("FLOURISH_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://owner:pw@127.0.0.1:1/flourish")  # nothing listens
    refused = CliRunner().invoke(cli, ["migrate"])
    assert refused.exit_code == 2
    assert "sslmode=verify-full" in refused.output and "sslrootcert" in refused.output
