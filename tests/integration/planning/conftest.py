"""The assessment and planning services started for real in-process, on a topic prefix of the
test's own: planning reads frameworks from the real assessment app over an ASGI transport."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.planning.app import app as planning_app
from shared.auth import DevIssuer, Role
from shared.events.envelope import Envelope, encode, topic_for
from shared.messaging.producer import KafkaPublisher, OutgoingRecord
from tests.integration.assessment.helpers import Tenant, serving_stack
from tests.integration.kernel.helpers import eventually


@dataclass
class Planning:
    client: httpx.AsyncClient
    app: Any
    assessment: httpx.AsyncClient
    tenant: Tenant
    publisher: KafkaPublisher
    prefix: str

    def staff(self, role: Role = Role.practitioner, subject: str = "practitioner-1",
              academies: list[uuid.UUID] | None = None) -> dict[str, str]:
        return self.tenant.headers(role, academies, subject=subject)

    async def publish(self, *envelopes: Envelope) -> None:
        records = []
        for envelope in envelopes:
            key, headers, value = encode(envelope)
            records.append(OutgoingRecord(topic_for(envelope.data.context, self.prefix), key, value, headers))
        await self.publisher.send_all(records)

    def consent_event(self, data: Any) -> Envelope:
        return Envelope(data=data, trust_id=self.tenant.trust_id, academy_id=self.tenant.academy_id,
                        source="/flourish/consent")

    async def suggestion_of(self, pupil: uuid.UUID, assessment_id: str | None = None) -> dict[str, Any]:
        async def ready() -> Any:
            response = await self.client.get(f"/pupils/{pupil}/suggestion", headers=self.staff())
            if response.status_code != 200:
                return None
            body = response.json()
            return body if assessment_id is None or assessment_id in [str(a) for a in body["based_on"]] else None

        return await eventually(ready)  # type: ignore[no-any-return]


@pytest.fixture
def service_settings(stack_settings, topic_prefix, tmp_path):
    return stack_settings.model_copy(
        update={"topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json"}
    )


@pytest.fixture
async def planning(service_settings, publisher, topic_prefix):
    tenant = Tenant(DevIssuer(service_settings))
    async with serving_stack(service_settings) as stack:
        assessment = stack.client
        # Planning seals notes and its events' personal fields with keys from the same consent service.
        app = planning_app(service_settings, assessment_http=assessment, consent_http=stack.consent)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://planning", timeout=60) as client:
                yield Planning(client, app, assessment, tenant, publisher, topic_prefix)
