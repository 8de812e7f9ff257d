"""The assessment service started for real for each test, on its own topic prefix."""

from __future__ import annotations

import pytest

from shared.auth import DevIssuer
from tests.integration.assessment.helpers import Tenant, serving


@pytest.fixture
def service_settings(stack_settings, topic_prefix, tmp_path):
    return stack_settings.model_copy(
        update={"topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json"}
    )


@pytest.fixture
def tenant(service_settings) -> Tenant:
    return Tenant(DevIssuer(service_settings))


@pytest.fixture
async def api(service_settings):
    async with serving(service_settings) as (_, client):
        yield client
