"""shared/messaging/clients.py: every Kafka client's login comes from the settings, one way; and the
local broker's properties (flourish/local/kafka.py) authenticate and authorise every client."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from faststream.security import SASLScram512

from flourish.local.kafka import KafkaLayout, write_properties
from shared.messaging.clients import ADMIN, KafkaCredentialsMissing, faststream_security, kafka_options
from shared.settings import Settings


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(state_dir=tmp_path, kafka_bootstrap_servers="127.0.0.1:1", **values)  # type: ignore[arg-type]


def test_in_development_a_service_logs_in_as_itself_with_its_local_password(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    folder = tmp_path / "kafka" / "credentials"
    folder.mkdir(parents=True)
    (folder / "planning").write_text("planning-secret\n")
    options = kafka_options(settings, "planning")
    assert options == {"bootstrap_servers": "127.0.0.1:1", "security_protocol": "SASL_PLAINTEXT",
                       "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "planning",
                       "sasl_plain_password": "planning-secret"}
    security = faststream_security(options)
    assert isinstance(security, SASLScram512) and security.username == "planning"


def test_the_credentials_folder_stays_when_a_test_gives_a_service_a_state_dir_of_its_own(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    moved = settings.model_copy(update={"state_dir": tmp_path / "elsewhere"})
    assert moved.kafka_credentials_dir == tmp_path / "kafka" / "credentials"


def test_a_missing_password_is_named(tmp_path: Path) -> None:
    with pytest.raises(KafkaCredentialsMissing, match="admin"):
        kafka_options(_settings(tmp_path), ADMIN)


def test_configured_credentials_win_and_production_requires_them(tmp_path: Path) -> None:
    named = kafka_options(_settings(tmp_path, kafka_username="consent-user", kafka_password="pw"), "consent")
    assert (named["sasl_plain_username"], named["sasl_plain_password"]) == ("consent-user", "pw")
    with pytest.raises(KafkaCredentialsMissing, match="FLOURISH_KAFKA_USERNAME"):
        kafka_options(_settings(tmp_path, environment="production"), "consent")
    with pytest.raises(KafkaCredentialsMissing, match="together"):
        kafka_options(_settings(tmp_path, kafka_username="only-a-name"), "consent")


def test_tls_verifies_the_brokers_against_the_ca(tmp_path: Path) -> None:
    options = kafka_options(_settings(tmp_path, kafka_security_protocol="SASL_SSL", kafka_username="u",
                                      kafka_password="p"), "consent")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert faststream_security(options).use_ssl  # type: ignore[union-attr]


def test_plaintext_sends_no_login(tmp_path: Path) -> None:
    options = kafka_options(_settings(tmp_path, kafka_security_protocol="PLAINTEXT"), "consent")
    assert options == {"bootstrap_servers": "127.0.0.1:1", "security_protocol": "PLAINTEXT"}
    assert faststream_security(options) is None


def test_the_local_broker_authenticates_and_authorises_every_client(tmp_path: Path) -> None:
    layout = KafkaLayout(root=tmp_path / "kafka", host="127.0.0.1", port=29999)
    layout.root.mkdir()
    write_properties(layout)
    properties = dict(line.split("=", 1) for line in layout.properties.read_text().splitlines() if "=" in line
                      and not line.startswith("#"))
    assert properties["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert properties["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:admin;User:controller"
    assert properties["auto.create.topics.enable"] == "false"
    # It holds the admin's password: owner-only, like the password files beside it.
    assert stat.S_IMODE(layout.properties.stat().st_mode) == 0o600
    for identity in ("admin", "assessment", "planning", "consent", "reporting", "controller"):
        path = tmp_path / "kafka" / "credentials" / identity
        assert not path.exists() or stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kafka" / "credentials").stat().st_mode) == 0o700
