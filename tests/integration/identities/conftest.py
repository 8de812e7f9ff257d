"""The four services in process, for the identity tests (test_identities, the service role matrix)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from shared.auth import DevIssuer
from tests.integration.identities.test_identities import DELIVERY, Platform
from tests.integration.services.in_process import four_services, settings_for


@pytest.fixture
async def platform(stack_settings, topic_prefix, tmp_path) -> AsyncIterator[Platform]:  # type: ignore[no-untyped-def]
    settings = settings_for(stack_settings, topic_prefix, tmp_path)
    async with AsyncExitStack() as stack:
        services = await four_services(stack, settings, DELIVERY)
        yield Platform(services.clients, services.apps, DevIssuer(settings))
