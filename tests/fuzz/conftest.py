"""The four services as real processes on ports of their own (18501-18504), on a database and topic
prefix of their own while the fuzz package runs, with a trust that has data: an academy, a class of
pupils and a group, so fuzzed requests carrying real ids reach the handlers rather than 404."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flourish.kafka_acls import deprovision, provision
from flourish.local import run_sync
from flourish.local.services import platform_environment, start_services, stop_services
from shared.auth import DevIssuer, Role
from shared.settings import Settings
from shared.store.db import create_engine
from tests.conftest import database_of_its_own
from tests.integration.assessment.helpers import pupil_rows, roster_csv

PORTS = {"assessment": 18501, "planning": 18502, "consent": 18503, "reporting": 18504}


@dataclass(frozen=True)
class Platform:
    settings: Settings
    issuer: DevIssuer
    trust_id: uuid.UUID
    academy_id: uuid.UUID
    class_id: uuid.UUID
    pupil_ids: list[uuid.UUID]
    group_id: uuid.UUID

    def url(self, service: str) -> str:
        return str(getattr(self.settings, f"{service}_url"))

    def headers(self, roles: list[Role] | None = None) -> dict[str, str]:
        """A token holding every role (unless told otherwise), so each operation's role check passes."""
        roles = roles or list(Role)
        client = "reporting" if Role.service in roles else None  # a service token names its client
        token = self.issuer.issue("fuzzer", roles, self.trust_id, [self.academy_id], client=client)
        return {"Authorization": f"Bearer {token}"}

    @property
    def known_ids(self) -> dict[str, str]:
        """Path parameters the fuzzer may swap for ids that exist."""
        return {"academy_id": str(self.academy_id), "class_id": str(self.class_id),
                "pupil_id": str(self.pupil_ids[0]), "group_id": str(self.group_id)}


@pytest.fixture(scope="package")
def platform(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with database_of_its_own(stack_settings, "fuzz") as own:
        yield from _platform(own, tmp_path_factory)


def _platform(base: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    state = tmp_path_factory.mktemp("fuzz-platform")
    settings = base.model_copy(update={
        "state_dir": state, "jwks_path": state / "dev-issuer" / "jwks.json",
        "topic_prefix": f"test.fuzz{uuid.uuid4().hex[:8]}.",
        **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in PORTS.items()},
    })
    issuer = DevIssuer(settings)
    try:
        run_sync(lambda: provision(settings))  # the prefix's topics and ACLs, as Kafka's admin
        start_services(settings, platform_environment(settings))
        yield _seed(settings, issuer)
    finally:
        stop_services(settings)
        run_sync(lambda: deprovision(settings, settings.topic_prefix))


def _seed(settings: Settings, issuer: DevIssuer) -> Platform:
    trust_id, academy_id = uuid.uuid4(), uuid.uuid4()
    token = issuer.issue("seeder", [Role.trust_admin, Role.senco], trust_id, [academy_id])
    with httpx.Client(base_url=settings.assessment_url, headers={"Authorization": f"Bearer {token}"}) as api:
        _ok(api.put("/trust", json={"name": "Fuzz Trust"}))
        _ok(api.put(f"/academies/{academy_id}", json={"name": "Fuzz Academy"}))
        imported = _ok(api.post(f"/academies/{academy_id}/roster-imports", content=roster_csv(pupil_rows(3, "4F")),
                                headers={"Content-Type": "text/csv"}))
        pupil_ids = [uuid.UUID(p["pupil_id"]) for p in imported["enrolled"]]
        class_id = uuid.UUID(_ok(api.get(f"/academies/{academy_id}/classes"))["items"][0]["class_id"])
        group = _ok(api.post(f"/academies/{academy_id}/groups",
                             json={"name": "Nurture", "pupil_ids": [str(p) for p in pupil_ids]}))
    return Platform(settings, issuer, trust_id, academy_id, class_id, pupil_ids, uuid.UUID(group["group_id"]))


def _ok(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    assert response.is_success, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="package")
async def engine(platform: Platform) -> AsyncIterator[AsyncEngine]:
    """The fuzzed platform's database (not the run's shared one)."""
    engine = create_engine(platform.settings, pool_size=2)
    yield engine
    await engine.dispose()
