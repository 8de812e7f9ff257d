"""Asking the consent service whether a share may go (GET /sharing-decisions), as the service.

Fail closed: anything but a well-formed answer from the service is `Unavailable` (no decision),
never an allow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx

from shared.peers import ServiceTokens
from shared.settings import Settings


class Unavailable(Exception):
    """The consent service gave no usable answer: treat as "no"."""


class UnknownPupil(Exception):
    """The consent service does not know the pupil (or the pupil is outside the trust)."""


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    academy_id: UUID
    lawful_basis: str | None
    consent_obtained: bool
    stream_id: str | None
    record_version: int | None
    decision_id: UUID | None
    raw: dict[str, Any]
    policy_reference: str | None = None

    @property
    def consent_id(self) -> UUID | None:
        """The consent decision a share rests on (only when the basis is consent)."""
        return self.decision_id if self.consent_obtained else None

    @classmethod
    def parse(cls, body: Any) -> Decision:
        try:
            record = body.get("record") or {}
            allow = body["allow"] is True and body["decision"] == "allow"
            return cls(
                allow=allow, reason=str(body.get("reason") or ("allowed" if allow else "denied")),
                academy_id=UUID(body["academy_id"]), lawful_basis=body.get("lawful_basis"),
                consent_obtained=body.get("consent_obtained") is True, stream_id=record.get("stream_id"),
                record_version=record.get("version"),
                decision_id=UUID(record["decision_id"]) if record.get("decision_id") else None, raw=body,
                policy_reference=body.get("policy_reference"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise Unavailable("the consent service's answer is not well formed") from None


class ConsentClient:
    def __init__(self, settings: Settings, *, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.tokens = ServiceTokens(settings, "reporting")
        self.http = httpx.AsyncClient(base_url=settings.consent_url, timeout=timeout_s, transport=transport)

    async def decide(self, trust_id: UUID, pupil_id: UUID, category: str, data_kind: str) -> Decision:
        try:
            token = await self.tokens.for_trust(trust_id)
            response = await self.http.get(
                "/sharing-decisions", headers={"Authorization": f"Bearer {token}"},
                params={"pupil_id": str(pupil_id), "agency_category": category, "data_kind": data_kind},
            )
        except Exception as error:  # noqa: BLE001 - any failure to ask is "no answer"
            raise Unavailable(type(error).__name__) from None
        if response.status_code in (404, 410):
            raise UnknownPupil(str(pupil_id))
        if response.status_code != 200:
            raise Unavailable(f"consent service answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise Unavailable("the consent service's answer is not JSON") from None
        decision = Decision.parse(body)
        if str(body.get("pupil_id")) != str(pupil_id) or body.get("agency_category") != category:
            raise Unavailable("the consent service answered a different question")
        return decision

    async def close(self) -> None:
        await self.http.aclose()
