"""The assessment, planning and reporting services running for real in-process on the test's own
topics; reporting calls the assessment service over an ASGI transport. Chromium comes from the
project's install script, once per session."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.planning.app import app as planning_service
from services.reporting.app import app as reporting_service
from shared.auth import DevIssuer, Role
from tests.integration.assessment.helpers import Tenant, serving_stack

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="session")
def chromium() -> str:
    """deploy/tools/install-chromium.sh: installs chromium and poppler-utils if missing, or fails."""
    done = subprocess.run([str(ROOT / "deploy/tools/install-chromium.sh")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Services:
    assessment: httpx.AsyncClient
    planning: httpx.AsyncClient
    reporting: httpx.AsyncClient
    reporting_app: Any
    tenant: Tenant
    settings: Any

    def staff(self, role: Role = Role.senco, academies: list[uuid.UUID] | None = None) -> dict[str, str]:
        return self.tenant.headers(role, academies, subject="practitioner-1")


@pytest.fixture
def service_settings(stack_settings, topic_prefix, tmp_path):
    return stack_settings.model_copy(
        update={"topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json"}
    )


@pytest.fixture
async def services(service_settings):
    tenant = Tenant(DevIssuer(service_settings))
    async with serving_stack(service_settings) as stack:
        assessment = stack.client
        # Planning seals, and reporting opens, with data keys from the stack's consent service.
        planning_app = planning_service(service_settings, assessment_http=assessment, consent_http=stack.consent)
        reporting_app = reporting_service(service_settings, assessment_http=assessment,
                                          consent_transport=httpx.ASGITransport(app=stack.consent_app))
        async with (
            planning_app.router.lifespan_context(planning_app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=planning_app), base_url="http://planning",
                              timeout=60) as planning,
            reporting_app.router.lifespan_context(reporting_app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=reporting_app), base_url="http://reporting",
                              timeout=120) as reporting,
        ):
            yield Services(assessment, planning, reporting, reporting_app, tenant, service_settings)
