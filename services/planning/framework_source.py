"""Where planning gets framework content: the assessment service owns it, planning fetches a
version once over HTTP with a service token for the trust and keeps it (versions are immutable)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from uuid import UUID

import httpx
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.planning.domain.errors import PlanningError
from services.planning.domain.framework import PlanningFramework
from services.planning.tables import frameworks
from shared.peers import ServiceTokens
from shared.problems import ServiceUnavailable


class UnknownFramework(PlanningError):
    def __init__(self, version: str) -> None:
        super().__init__(f"framework version {version!r} is not known to the assessment service")


class FrameworkSource(Protocol):
    async def get(self, trust_id: UUID, version: str) -> PlanningFramework: ...


Fetch = Callable[[UUID, str], Awaitable[dict[str, Any]]]


class AssessmentFrameworks:
    """Fetches `GET {assessment_url}/frameworks/{version}` as the trust's `service` principal."""

    def __init__(self, base_url: str, tokens: ServiceTokens, http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.http = http

    async def __call__(self, trust_id: UUID, version: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {await self.tokens.for_trust(trust_id)}"}
        http = self.http or httpx.AsyncClient(timeout=10.0)
        try:
            response = await http.get(f"{self.base_url}/frameworks/{version}", headers=headers)
        except httpx.HTTPError:
            raise ServiceUnavailable("the assessment service did not answer for the framework", retry_after_s=5) from None
        finally:
            if self.http is None:
                await http.aclose()
        if response.status_code == 404:
            raise UnknownFramework(version)
        if response.status_code != 200:
            raise ServiceUnavailable("the assessment service could not give the framework", retry_after_s=5)
        return response.json()  # type: ignore[no-any-return]


class CachedFrameworks:
    """Memory, then this service's own table, then the fetch (stored for good: versions never change)."""

    def __init__(self, engine: AsyncEngine, fetch: Fetch) -> None:
        self.engine = engine
        self.fetch = fetch
        self._memory: dict[tuple[UUID, str], PlanningFramework] = {}

    async def get(self, trust_id: UUID, version: str) -> PlanningFramework:
        key = (trust_id, version)
        if key in self._memory:
            return self._memory[key]
        async with self.engine.connect() as conn:
            document = await conn.scalar(
                select(frameworks.c.document).where(frameworks.c.trust_id == trust_id, frameworks.c.version == version)
            )
        if document is None:
            document = await self.fetch(trust_id, version)
            async with self.engine.begin() as conn:
                await conn.execute(insert(frameworks).values(trust_id=trust_id, version=version, document=document)
                                   .on_conflict_do_nothing())
        framework = PlanningFramework.from_data(document)
        self._memory[key] = framework
        return framework
