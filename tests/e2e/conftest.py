"""The whole platform as a trust runs it: the four services as real processes (uvicorn, as
`make up` starts them) on the test run's database and a topic prefix of the test's own, every
span written to one JSON-lines file, a real webhook receiver on 127.0.0.1, and staff tokens from
the platform's dev issuer. The story talks to the services over HTTP only."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flourish.local.services import platform_environment, service_processes, start_services, stop_services
from shared.auth import DevIssuer, Role
from shared.settings import Settings
from tests.conftest import database_of_its_own
from tests.integration.reporting.sharing.conftest import Receiver, receiver

__all__ = ["Platform", "Receiver", "receiver"]

# Ports of this test's own, so it runs beside `make up` and other platforms on the machine.
PORTS = {"assessment": 18201, "planning": 18202, "consent": 18203, "reporting": 18204}

# What the story needs faster than production: webhook retries, the delivery worker's polling,
# signed checkpoints (so `audit verify` checks a signature), the relay's fallback poll.
FAST = {
    "FLOURISH_SHARING_ALLOWED_PRIVATE_NETWORKS": '["127.0.0.1/32"]',
    "FLOURISH_SHARING_BACKOFF_BASE_S": "0.2",
    "FLOURISH_SHARING_POLL_INTERVAL_S": "0.1",
    "FLOURISH_AUDIT_CHECKPOINT_EVERY_S": "1",
    "FLOURISH_RELAY_POLL_INTERVAL_S": "0.1",
    "FLOURISH_CONSUMER_BACKOFF_BASE_S": "0.05",
    "FLOURISH_CONSUMER_BACKOFF_MAX_S": "0.5",
    "FLOURISH_RETENTION_CLOCK_INTERVAL_S": "0.5",
}


@dataclass
class Platform:
    """The running services, the tenant the story works in and every token handed out (so the
    scan afterwards can look for them in logs and spans)."""

    settings: Settings
    issuer: DevIssuer
    assessment: httpx.AsyncClient
    planning: httpx.AsyncClient
    consent: httpx.AsyncClient
    reporting: httpx.AsyncClient
    trust_id: uuid.UUID = field(default_factory=uuid.uuid4)
    academies: tuple[uuid.UUID, uuid.UUID] = field(default_factory=lambda: (uuid.uuid4(), uuid.uuid4()))
    tokens: list[str] = field(default_factory=list)

    def as_(self, role: Role, subject: str | None = None, academies: list[uuid.UUID] | None = None) -> dict[str, str]:
        """Headers for a member of staff: academy roles in the first academy, trust roles trust-wide."""
        if academies is None:
            academies = [self.academies[0]] if role in (Role.practitioner, Role.senco) else []
        client = "reporting" if role is Role.service else None  # a service token names its client
        token = self.issuer.issue(subject or f"{role.value}-1", [role], self.trust_id, academies, client=client)
        self.tokens.append(token)
        return {"Authorization": f"Bearer {token}"}

    def log_files(self) -> list[Path]:
        return [process.log_file for process in service_processes(self.settings)]

    def spans(self) -> list[dict[str, Any]]:
        assert self.settings.trace_file is not None
        return [json.loads(line) for line in self.settings.trace_file.read_text().splitlines() if line]

    async def stop(self) -> list[str]:
        """SIGTERM every service and wait: each flushes its batched spans as it shuts down."""
        return await asyncio.to_thread(stop_services, self.settings)


@pytest.fixture
async def platform(stack_settings: Settings, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Platform]:
    with database_of_its_own(stack_settings, "e2e") as own:
        async for platform in _platform(own, topic_prefix, tmp_path):
            yield platform


async def _platform(base: Settings, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Platform]:
    settings = base.model_copy(update={
        "topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
        "trace_file": tmp_path / "spans.jsonl",
        **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in PORTS.items()},
    })
    issuer = DevIssuer(settings)  # the keys exist before the services read the JWKS
    environment = {**platform_environment(settings), **FAST}
    try:
        await asyncio.to_thread(start_services, settings, environment)
        clients = {name: httpx.AsyncClient(base_url=getattr(settings, f"{name}_url"), timeout=60) for name in PORTS}
        try:
            yield Platform(settings, issuer, **clients)
        finally:
            for client in clients.values():
                await client.aclose()
    finally:
        await asyncio.to_thread(stop_services, settings)

