"""The reporting service with sharing, beside the consent service (both in-process, real Kafka and
PostgreSQL, topics of the test's own), and a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from services.reporting.app import ReportingServiceSettings
from services.reporting.app import app as reporting_service
from services.reporting.sharing import SharingSettings
from services.reporting.sharing.tables import attempts, deliveries
from shared.auth import DevIssuer, Role
from tests.integration.consent.conftest import Consent, running_consent
from tests.integration.kernel.helpers import eventually
from tests.integration.reporting.sharing.documents import Documents, seed

__all__ = ["Receiver", "Stack", "eventually"]

SCHEDULE = SharingSettings(allowed_private_networks=["127.0.0.1/32"], retry_schedule_s=[0, 0.2, 0.4, 0.8, 1.6],
                           jitter=0.5, poll_interval_s=0.05)


@dataclass
class Receiver:
    """A webhook endpoint: records every request; answers 500 to the first `fail_first` of them.
    Its `endpoint.verification` events are kept apart (`verifications`) and answered
    `verification_status`."""

    url: str = ""
    fail_first: int = 0
    reject: Any = None  # body -> True to answer 500
    received: list[dict[str, Any]] = field(default_factory=list)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    verification_status: int = 204

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if b'"type":"endpoint.verification"' in body:
            self.verifications.append({"headers": headers, "body": body, "at": datetime.now(UTC)})
            await send({"type": "http.response.start", "status": self.verification_status, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.received.append({"headers": headers, "body": body, "at": datetime.now(UTC)})
        failing = len(self.received) <= self.fail_first or (self.reject is not None and self.reject(body))
        status = 500 if failing else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    hook = Receiver(url=f"http://127.0.0.1:{port}/hooks")
    server = uvicorn.Server(uvicorn.Config(hook, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: _started(server))
    yield hook
    server.should_exit = True
    await task


async def _started(server: uvicorn.Server) -> bool:
    return server.started


@dataclass
class Stack:
    consent: Consent
    client: httpx.AsyncClient
    engine: Any
    issuer: DevIssuer
    seeded: dict[uuid.UUID, Documents] = field(default_factory=dict)

    def staff(self, role: Role = Role.senco, academies: list[uuid.UUID] | None = None) -> dict[str, str]:
        academies = self.consent.academies if academies is None else academies
        token = self.issuer.issue(f"{role.value}-1", [role], self.consent.trust_id, academies)
        return {"Authorization": f"Bearer {token}"}

    async def agency(self, url: str, category: str = "camhs") -> dict[str, Any]:
        response = await self.client.post("/sharing/agencies", headers=self.staff(Role.trust_admin),
                                          json={"category": category, "organisation": "North CAMHS", "endpoint_url": url})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def grant(self, pupil_id: uuid.UUID, purpose: str = "share_camhs") -> None:
        response = await self.consent.client.post(f"/pupils/{pupil_id}/consents", headers=self.consent.senco,
                                                  json=self.consent.consent_body(purpose))
        assert response.status_code in (200, 201), response.text

    async def withdraw(self, pupil_id: uuid.UUID, purpose: str = "share_camhs") -> None:
        response = await self.consent.client.post(f"/pupils/{pupil_id}/consents/{purpose}/withdrawal",
                                                  headers=self.consent.senco, json=self.consent.withdrawal_body())
        assert response.status_code in (200, 201), response.text

    async def documents(self, pupil_id: uuid.UUID) -> Documents:
        """The pupil's documents in the read models (seeded on first use)."""
        if pupil_id not in self.seeded:
            self.seeded[pupil_id] = await seed(self.engine, self.consent.trust_id, self.consent.academy_id, pupil_id)
        return self.seeded[pupil_id]

    async def share(self, agency_id: str, pupil_id: uuid.UUID, kind: str = "report", **extra: Any) -> httpx.Response:
        """Shares the pupil's document of that kind (seeded), unless `document_id` names another."""
        if "document_id" not in extra:
            extra["document_id"] = (await self.documents(pupil_id)).id_of(kind)
        return await self.client.post("/sharing/shares", headers=self.staff(), json={
            "agency_id": agency_id, "pupil_id": str(pupil_id), "document_kind": kind, **extra})

    async def delivery(self, delivery_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(deliveries).where(deliveries.c.delivery_id == uuid.UUID(delivery_id)))).first()

    async def attempts(self, delivery_id: str) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(attempts).where(attempts.c.delivery_id == uuid.UUID(delivery_id))
                                            .order_by(attempts.c.attempt))).all())


@pytest.fixture
async def stack(stack_settings, topic_prefix, tmp_path, publisher, consent_settings, engine) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    async with running_consent(stack_settings, topic_prefix, tmp_path, publisher, consent_settings) as consent:
        settings = stack_settings.model_copy(update={
            "topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
            "relay_poll_interval_s": 0.1,
        })
        app = reporting_service(ReportingServiceSettings(kernel=settings, sharing=SCHEDULE),
                                consent_transport=httpx.ASGITransport(app=consent.app))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://reporting") as client:
                yield Stack(consent, client, engine, DevIssuer(settings))


@pytest.fixture
def consent_settings():  # type: ignore[no-untyped-def]
    from services.consent.app import ConsentSettings

    return ConsentSettings(run_retention_scheduler=False)
