"""The webhooks an agency's endpoint receives, as JSON Schema in the OpenAPI 3.1 `webhooks`
section of reporting's /openapi.json (FastAPI's `app.webhooks`). Every body is
`{"type", "timestamp", "data"}`, signed per Standard Webhooks (`webhook-id` is the delivery id,
`webhook-timestamp`, `webhook-signature: v1,<base64>`); `data` names the trust and academy."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field


class ShareData(BaseModel):
    trust_id: UUID
    academy_id: UUID
    share_id: UUID
    pupil_id: UUID
    agency_category: str
    document_kind: str
    document_id: UUID | None = None
    document: dict[str, Any] | None = Field(default=None, description="The document shared")
    lawful_basis: str | None = None
    shared_at: datetime


class ShareCreated(BaseModel):
    type: Literal["share.created"]
    timestamp: datetime
    data: ShareData


class DeletionData(BaseModel):
    trust_id: UUID
    academy_id: UUID
    pupil_id: UUID
    agency_category: str
    share_ids: list[UUID] = Field(description="Every share of this pupil's data the agency received")
    reason: str = Field(description="consent_withdrawn, consent_expired, pupil_erased or retention_expired")
    instruction: str
    withdrawn_at: datetime | None = None
    erased_at: datetime | None = None
    expired_at: datetime | None = None


class DeletionRequested(BaseModel):
    type: Literal["share.deletion_requested"]
    timestamp: datetime
    data: DeletionData


WEBHOOKS: dict[str, type[BaseModel]] = {"share.created": ShareCreated, "share.deletion_requested": DeletionRequested}


def publish_webhooks(app: FastAPI) -> None:
    """Describe every payload type under the OpenAPI document's `webhooks`."""
    router: APIRouter = app.webhooks
    for name, model in WEBHOOKS.items():
        async def receive(body: Any) -> None:  # documentation only: the agency implements it
            return None

        receive.__annotations__["body"] = model
        router.add_api_route(name, receive, methods=["POST"], name=name, status_code=204,
                             summary=f"{name}: answer 2xx once stored; 410 Gone disables the endpoint",
                             description=model.__doc__ or name)
