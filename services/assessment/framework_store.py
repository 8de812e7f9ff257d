"""Framework versions in the `frameworks` table: loading, finding, and keeping used ones immutable.

The platform's frameworks (owner: the nil UUID) are visible to every trust; a trust's own are
visible to it alone. A version is locked the first time an assessment or observation uses it:
loading other content under it is refused from then on (the same content is a no-op). Parsed
frameworks are cached in-process by content hash, which changes whenever the content does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.assessment.domain.errors import FrameworkVersionInUse, FrameworkVersionReserved, UnknownFrameworkVersion
from services.assessment.domain.framework import Framework, framework_from_data, parse_framework
from services.assessment.tables import frameworks

PLATFORM = UUID(int=0)
SAMPLE_VERSION = "flourish-sample-1"
SAMPLE_PATH = Path(__file__).parent / "frameworks" / f"{SAMPLE_VERSION}.yaml"


class LoadOutcome(StrEnum):
    CREATED = "created"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class FrameworkSummary:
    version: str
    name: str
    owner: str  # "platform" or "trust"
    content_hash: str
    loaded_at: datetime
    locked: bool


def sample_framework() -> Framework:
    return parse_framework(SAMPLE_PATH.read_text(encoding="utf-8"))


class FrameworkStore:
    def __init__(self) -> None:
        self._parsed: dict[str, Framework] = {}
        # Versions seen committed as used, by (the trust asking, version): immutable.
        self._in_use: dict[tuple[UUID, str], Framework] = {}

    async def load(self, conn: AsyncConnection, owner: UUID, framework: Framework, loaded_by: str) -> LoadOutcome:
        """Store a version for its owner (PLATFORM or a trust); refuse to change a used one."""
        version = framework.version
        if owner != PLATFORM and await self._platform_has(conn, version):
            raise FrameworkVersionReserved(version)
        existing = (await conn.execute(
            select(frameworks.c.content_hash, frameworks.c.first_used_at)
            .where(frameworks.c.owner_trust_id == owner, frameworks.c.version == version)
            .with_for_update()
        )).first()
        values = {"name": framework.document.name, "content": framework.document.model_dump(mode="json"),
                  "content_hash": framework.content_hash, "loaded_by": loaded_by}
        if existing is None:
            inserted = await conn.execute(
                insert(frameworks).values(owner_trust_id=owner, version=version, **values)
                .on_conflict_do_nothing().returning(frameworks.c.version)
            )
            if inserted.first() is None:  # a concurrent load of the same version won: judge against it
                return await self.load(conn, owner, framework, loaded_by)
            return LoadOutcome.CREATED
        if existing.content_hash == framework.content_hash:
            return LoadOutcome.UNCHANGED
        if existing.first_used_at is not None:
            raise FrameworkVersionInUse(version)
        await conn.execute(
            update(frameworks).where(frameworks.c.owner_trust_id == owner, frameworks.c.version == version)
            .values(**values, loaded_at=func.now())
        )
        return LoadOutcome.REPLACED

    async def get(self, conn: AsyncConnection, trust_id: UUID, version: str, *, for_use: bool = False) -> Framework:
        found = await self.get_many(conn, trust_id, [version], for_use=for_use)
        if version not in found:
            raise UnknownFrameworkVersion(version)
        return found[version]

    async def get_many(
        self, conn: AsyncConnection, trust_id: UUID, versions: Iterable[str], *, for_use: bool = False
    ) -> dict[str, Framework]:
        """The versions this trust can use (unknown ones are left out).

        `for_use`: the caller is about to record against them, so they are locked against change.
        A version once used never changes (`load` refuses other content for it, and no version is
        ever deleted), so a used version is read once per process and served from memory after:
        no statement, and no lock on a row every request would touch. A version not yet used is
        marked used by the caller's transaction (`first_used_at`), whose row lock holds off a
        concurrent replacement until it ends; the content it marked is the content returned.
        """
        wanted = sorted(set(versions))
        if not wanted:
            return {}
        found = {v: self._in_use[(trust_id, v)] for v in wanted if (trust_id, v) in self._in_use}
        missing = [v for v in wanted if v not in found]
        if not missing:
            return found
        query = (
            select(frameworks.c.owner_trust_id, frameworks.c.version, frameworks.c.content_hash, frameworks.c.first_used_at)
            .where(frameworks.c.version.in_(missing), frameworks.c.owner_trust_id.in_([trust_id, PLATFORM]))
        )
        rows = (await conn.execute(query)).all()
        hashes = {(r.owner_trust_id, r.version): r.content_hash for r in rows}
        if for_use:
            unused = [(r.owner_trust_id, r.version) for r in rows if r.first_used_at is None]
            marked = await self._lock_first_use(conn, unused)
            hashes.update(marked)  # what was marked, should a replacement have committed since the read
            if len(marked) < len(unused):  # a concurrent first use won: read what it committed
                hashes.update({(r.owner_trust_id, r.version): r.content_hash for r in await conn.execute(query)})
        for row in rows:
            framework = await self._parse(conn, row.owner_trust_id, row.version, hashes[(row.owner_trust_id, row.version)])
            found[row.version] = framework
            if row.first_used_at is not None:  # committed as used: immutable from here on
                self._in_use[(trust_id, row.version)] = framework
        return found

    async def summaries(self, conn: AsyncConnection, trust_id: UUID, after: str | None, limit: int) -> list[FrameworkSummary]:
        query = (
            select(frameworks.c.owner_trust_id, frameworks.c.version, frameworks.c.name, frameworks.c.content_hash,
                   frameworks.c.loaded_at, frameworks.c.first_used_at)
            .where(frameworks.c.owner_trust_id.in_([trust_id, PLATFORM]))
            .order_by(frameworks.c.version).limit(limit)
        )
        if after is not None:
            query = query.where(frameworks.c.version > after)
        return [
            FrameworkSummary(r.version, r.name, "platform" if r.owner_trust_id == PLATFORM else "trust",
                             r.content_hash, r.loaded_at, r.first_used_at is not None)
            for r in await conn.execute(query)
        ]

    async def _parse(self, conn: AsyncConnection, owner: UUID, version: str, content_hash: str) -> Framework:
        cached = self._parsed.get(content_hash)
        if cached is None:
            content: Any = await conn.scalar(
                select(frameworks.c.content).where(frameworks.c.owner_trust_id == owner, frameworks.c.version == version)
            )
            cached = self._parsed[content_hash] = framework_from_data(content)
        return cached

    async def _platform_has(self, conn: AsyncConnection, version: str) -> bool:
        found = await conn.scalar(
            select(frameworks.c.version).where(frameworks.c.owner_trust_id == PLATFORM, frameworks.c.version == version)
        )
        return found is not None

    async def _lock_first_use(self, conn: AsyncConnection, keys: list[tuple[UUID, str]]) -> dict[tuple[UUID, str], str]:
        """Mark these versions used (their rows stay locked until the caller's transaction ends);
        the content hash of each version marked."""
        if not keys:
            return {}
        marked = await conn.execute(
            update(frameworks)
            .where(or_(*(and_(frameworks.c.owner_trust_id == o, frameworks.c.version == v) for o, v in keys)),
                   frameworks.c.first_used_at.is_(None))
            .values(first_used_at=func.now())
            .returning(frameworks.c.owner_trust_id, frameworks.c.version, frameworks.c.content_hash)
        )
        return {(r.owner_trust_id, r.version): r.content_hash for r in marked}
