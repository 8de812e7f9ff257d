"""The families' notices, end to end: the consent service and the reporting service in process
(real PostgreSQL and Kafka, topics of the test's own), a real webhook receiver for the agency, and a
real SMTP server (aiosmtpd) on 127.0.0.1 that a test may start late, to play an SMTP outage."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from services.reporting.app import ReportingServiceSettings
from services.reporting.app import app as reporting_service
from services.reporting.sharing import NoticeSettings
from services.reporting.sharing.tables import family_notices
from shared.auth import DevIssuer, Role
from tests.integration.consent.conftest import running_consent
from tests.integration.reporting.sharing.conftest import SCHEDULE, Receiver, Stack, receiver

__all__ = ["Mailbox", "Notices", "receiver"]


class Mailbox:
    """An SMTP server's handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("bounce."):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [message for rcpt, message in self.messages if address in rcpt]


@dataclass
class Smtp:
    """A real SMTP server on a port of its own; down until `start()` (and after `stop()`)."""

    port: int
    mailbox: Mailbox = field(default_factory=Mailbox)
    controller: Controller | None = None

    login: tuple[str, str] | None = None  # when set, the server requires this AUTH login

    def start(self) -> None:
        auth: dict[str, Any] = {}
        if self.login is not None:
            auth = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **auth)
        self.controller.start()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.login == (data.login.decode(), data.password.decode())
        return AuthResult(success=ok)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Smtp(port)
    yield server
    server.stop()


@dataclass
class Notices(Stack):
    smtp: Smtp | None = None

    def dpo(self) -> dict[str, str]:
        token = self.issuer.issue("dpo-7", [Role.dpo], self.consent.trust_id, [])
        return {"Authorization": f"Bearer {token}"}

    async def notice(self, share_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(family_notices).where(
                family_notices.c.share_id == uuid.UUID(share_id)))).first()

    async def notice_in(self, share_id: str, *statuses: str) -> Any:
        row = await self.notice(share_id)
        return row if row is not None and row.status in statuses else None


SENDER = NoticeSettings(smtp_host="127.0.0.1", smtp_from="Oak Academy <office@oak.example>", sender_name="Oak Academy",
                        backoff_base_s=0.2, backoff_factor=1.5, backoff_max_s=1.0, jitter=0.1, poll_interval_s=0.05,
                        smtp_timeout_s=2.0)


@pytest.fixture
def sender(smtp: Smtp) -> NoticeSettings:
    """The notices' settings: the test's SMTP server (a test may override this fixture)."""
    return SENDER.model_copy(update={"smtp_port": smtp.port})


@pytest.fixture
async def notices(stack_settings, topic_prefix, tmp_path, publisher, consent_settings, engine,  # type: ignore[no-untyped-def]
                  smtp: Smtp, sender: NoticeSettings) -> AsyncIterator[Notices]:
    async with running_consent(stack_settings, topic_prefix, tmp_path, publisher, consent_settings) as consent:
        settings = stack_settings.model_copy(update={
            "topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
            "relay_poll_interval_s": 0.1,
        })
        app = reporting_service(ReportingServiceSettings(
            kernel=settings, sharing=SCHEDULE, notices=sender),
            consent_transport=httpx.ASGITransport(app=consent.app))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://reporting") as client:
                yield Notices(consent, client, engine, DevIssuer(settings), smtp=smtp)


@pytest.fixture
def consent_settings():  # type: ignore[no-untyped-def]
    from services.consent.app import ConsentSettings

    return ConsentSettings(run_retention_scheduler=False)


_ = (Receiver, receiver)
