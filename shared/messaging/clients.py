"""The one way to make a Kafka client: every producer, consumer, admin client and FastStream broker
in the repository takes its connection options from here, so every one of them authenticates.

Each service logs in as itself (`assessment`, `planning`, `consent`, `reporting`): the broker's
ACLs (flourish/kafka_acls.py) let it write only its own topics and read only what it subscribes to.
Topic creation and configuration belong to `admin`, used by the launcher, the tests' fixtures,
bench set-up and the operator's commands.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from shared.settings import Settings

ADMIN = "admin"
SERVICE_IDENTITIES = ("assessment", "planning", "consent", "reporting")
IDENTITIES = (ADMIN, *SERVICE_IDENTITIES)
SCRAM_MECHANISM = "SCRAM-SHA-512"


class KafkaCredentialsMissing(RuntimeError):
    """No password for the identity: neither FLOURISH_KAFKA_PASSWORD nor a development file."""


def credentials_file(state_dir: Path, identity: str) -> Path:
    """Where the local broker's launcher keeps an identity's password (owner-only)."""
    return state_dir / "kafka" / "credentials" / identity  # Settings.kafka_credentials_dir's default


def credentials(settings: Settings, identity: str) -> tuple[str, str]:
    """The username and password a client of `identity` logs in with: the ones the settings name
    (a deployment's KafkaUser), else, in development, the identity and its local password file."""
    if settings.kafka_username or settings.kafka_password:
        if not (settings.kafka_username and settings.kafka_password):
            raise KafkaCredentialsMissing("FLOURISH_KAFKA_USERNAME and FLOURISH_KAFKA_PASSWORD go together")
        return settings.kafka_username, settings.kafka_password
    if settings.environment == "production":
        raise KafkaCredentialsMissing("FLOURISH_KAFKA_USERNAME and FLOURISH_KAFKA_PASSWORD are required in production")
    assert settings.kafka_credentials_dir is not None  # set from state_dir when the settings are made
    path = settings.kafka_credentials_dir / identity
    try:
        return identity, path.read_text().strip()
    except FileNotFoundError:
        raise KafkaCredentialsMissing(
            f"no Kafka password for {identity!r} at {path}: `flourish infra up` makes it with the local broker"
        ) from None


def _uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_SSL", "SSL")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SASL_SSL and SSL: verifies the brokers' certificates and host names
    against the CA file (or the system's CAs)."""
    if not _uses_tls(settings):
        return None
    cafile = str(settings.kafka_ca_file) if settings.kafka_ca_file else None
    return ssl.create_default_context(cafile=cafile)


def kafka_options(settings: Settings, identity: str) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer or admin client logging in as `identity`:
    bootstrap_servers, security_protocol and, as the protocol needs, the SASL login and TLS context."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if _uses_sasl(settings):
        username, password = credentials(settings, identity)
        options |= {"sasl_mechanism": settings.kafka_sasl_mechanism,
                    "sasl_plain_username": username, "sasl_plain_password": password}
    if _uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    return options


def faststream_security(kafka: Mapping[str, Any]) -> BaseSecurity | None:
    """The same login (options from `kafka_options`) as FastStream's `security=` object (its KafkaBroker)."""
    context = kafka.get("ssl_context")
    tls = context is not None
    mechanism = kafka.get("sasl_mechanism")
    if mechanism is None:
        return BaseSecurity(ssl_context=context, use_ssl=True) if tls else None
    kind = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}[mechanism]
    return kind(kafka["sasl_plain_username"], kafka["sasl_plain_password"], ssl_context=context, use_ssl=tls)
