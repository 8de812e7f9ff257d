"""Fail closed at start: in production a service (and `flourish migrate`) checks every secret and
setting it needs before it connects to anything, and refuses to start with one error that names
everything missing or wrong, not the first only. Each service adds its own checks (its KEK, its
lookup key, its audit signing key) through its settings tree (`ServiceSettings.production_problems`),
so this module knows no service. In development nothing here applies.

Each problem names the setting (its environment variable) and what is wrong with it, never its
value: a value may be a secret.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import Settings

# The peers' URLs, by setting: data keys and personal data travel on them.
PEER_URLS = ("assessment_url", "planning_url", "consent_url", "reporting_url")


class ProductionMisconfigured(RuntimeError):
    """Production settings that are missing or wrong: every one of them, in one message."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("refusing to start in production: " + "; ".join(self.problems))


def _https(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme == "https" and bool(urlsplit(str(url)).hostname)


def identity_problems(settings: Settings) -> list[str]:
    """The trust's identity provider: the only signer of tokens the services accept."""
    problems = []
    if not settings.jwks_url:
        problems.append("FLOURISH_JWKS_URL is missing (the identity provider's signing keys; without it the "
                        "local dev issuer's keys would be trusted)")
    elif not _https(settings.jwks_url):
        problems.append("FLOURISH_JWKS_URL must be an https URL")
    if not _https(settings.token_issuer):
        problems.append("FLOURISH_TOKEN_ISSUER must be the identity provider's https issuer URL")
    return problems


def service_client_problems(settings: Settings) -> list[str]:
    """How this service gets its own tokens for its peers (client credentials)."""
    problems = []
    if not settings.service_client_id:
        problems.append("FLOURISH_SERVICE_CLIENT_ID is missing")
    if not settings.service_client_secret:
        problems.append("FLOURISH_SERVICE_CLIENT_SECRET is missing")
    if not settings.service_token_url:
        problems.append("FLOURISH_SERVICE_TOKEN_URL is missing")
    elif not _https(settings.service_token_url):
        problems.append("FLOURISH_SERVICE_TOKEN_URL must be an https URL")
    return problems


def peer_problems(settings: Settings) -> list[str]:
    """Peers over https, or a mesh that encrypts pod-to-pod traffic (FLOURISH_MESH_MTLS)."""
    if settings.mesh_mtls:
        return []
    return [f"FLOURISH_{name.upper()} must be https (or FLOURISH_MESH_MTLS=true where a service mesh "
            "encrypts pod-to-pod traffic)" for name in PEER_URLS if not _https(getattr(settings, name))]


def database_problems(settings: Settings) -> list[str]:
    """DATABASE_URL: TLS that verifies the server's certificate and its name, against a named CA."""
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return ["DATABASE_URL is not a database URL"]
    query = {key: (value if isinstance(value, str) else value[-1]) for key, value in url.query.items()}
    problems = []
    if query.get("sslmode", query.get("ssl")) != "verify-full":
        problems.append("DATABASE_URL must ask for TLS with sslmode=verify-full (the server's certificate and "
                        "host name verified)")
    if not query.get("sslrootcert"):
        problems.append("DATABASE_URL must name the CA that signed the server's certificate (sslrootcert=<file>)")
    elif not Path(query["sslrootcert"]).is_file():
        problems.append("DATABASE_URL's sslrootcert names no readable file")
    if url.password is None and not query.get("sslcert"):
        problems.append("DATABASE_URL has no credentials (a password or a client certificate, sslcert/sslkey)")
    return problems


def kafka_problems(settings: Settings) -> list[str]:
    """Kafka with an identity: SASL (SCRAM) over TLS, or over a mesh that encrypts it."""
    protocol = str(settings.kafka_security_protocol).upper()
    problems = []
    if protocol == "PLAINTEXT":
        problems.append("FLOURISH_KAFKA_SECURITY_PROTOCOL must not be PLAINTEXT (anonymous clients): SASL_SSL")
    elif protocol == "SASL_PLAINTEXT" and not settings.mesh_mtls:
        problems.append("FLOURISH_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends events in clear: SASL_SSL, or "
                        "FLOURISH_MESH_MTLS=true where a service mesh encrypts pod-to-pod traffic")
    elif protocol not in ("SASL_SSL", "SASL_PLAINTEXT"):
        problems.append(f"FLOURISH_KAFKA_SECURITY_PROTOCOL={protocol} is not supported: SASL_SSL")
    if protocol.startswith("SASL_"):
        if not settings.kafka_username:
            problems.append("FLOURISH_KAFKA_USERNAME is missing (this service's Kafka identity)")
        if not settings.kafka_password:
            problems.append("FLOURISH_KAFKA_PASSWORD is missing")
    return problems


def key_problems(variable: str, value: SecretStr | None, *, size: int = 32) -> list[str]:
    """A secret key given as base64 of `size` random bytes (a KEK, the lookup key)."""
    if value is None or not value.get_secret_value().strip():
        return [f"{variable} is missing"]
    try:
        material = base64.b64decode(value.get_secret_value().strip(), validate=True)
    except (ValueError, binascii.Error):
        return [f"{variable} is not valid base64"]
    return [] if len(material) == size else [f"{variable} must be base64 of {size} random bytes"]


def https_problems(variable: str, urls: Iterable[str], settings: Settings) -> list[str]:
    """URLs that personal data travel to: https, unless the mesh encrypts pod-to-pod traffic."""
    if settings.mesh_mtls:
        return []
    return [f"{variable} must be https (or FLOURISH_MESH_MTLS=true)" for url in urls if not _https(url)][:1]


def production_problems(settings: Settings, *, migration: bool = False) -> list[str]:
    """Everything the kernel requires in production. `migration`: the migration step's, which
    connects to the database only."""
    if migration:
        return database_problems(settings)
    return [*identity_problems(settings), *service_client_problems(settings), *peer_problems(settings),
            *database_problems(settings), *kafka_problems(settings)]


def validate_production(settings: Settings, service_problems: Iterable[str] = (), *, migration: bool = False) -> None:
    """In production, raise ProductionMisconfigured naming every kernel and service problem at
    once; in development, nothing."""
    if settings.environment != "production":
        return
    problems = [*production_problems(settings, migration=migration), *service_problems]
    if problems:
        raise ProductionMisconfigured(problems)


async def schema_owner_problems(engine: AsyncEngine, schema: str) -> list[str]:
    """The role a service connects as must not own its schema or any of its tables (nor be a
    member of the owner, nor a superuser): the owner can drop the audit ledger's triggers, disable
    row-level security and change its own grants. Only the migration step connects as the owner."""
    async with engine.connect() as conn:
        row = (await conn.execute(text("""
            SELECT current_user AS role,
                   (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
                   COALESCE((SELECT pg_has_role(current_user, n.nspowner, 'MEMBER')
                             FROM pg_namespace n WHERE n.nspname = :schema), false) AS owns_schema,
                   (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = :schema AND pg_has_role(current_user, c.relowner, 'MEMBER')) AS owned
        """), {"schema": schema})).one()
    problems = []
    if row.superuser:
        problems.append(f"DATABASE_URL connects as a superuser ({row.role}): use the service's own role")
    elif row.owns_schema or row.owned:
        problems.append(f"DATABASE_URL connects as an owner of schema {schema} ({row.role}): the service's role "
                        "must not own its schema or tables (the migration step runs as the owner)")
    return problems

