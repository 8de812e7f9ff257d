"""The reporting service's ops page, served for real beside a live peer and a dead one."""

from __future__ import annotations

import socket

from services.reporting.app import SPEC as REPORTING
from tests.integration.services.test_service_shell import serving


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_the_ops_page_shows_every_service_and_names_the_one_that_does_not_answer(
    stack_settings, topic_prefix, tmp_path
):
    dead = f"http://127.0.0.1:{_closed_port()}"
    settings = stack_settings.model_copy(update={
        "topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
        "assessment_url": dead, "planning_url": dead, "consent_url": dead,
    })
    async with serving(REPORTING, settings) as client:
        page = await client.get("/ops")
        figures = (await client.get("/ops.json")).json()

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    by_service = {row["service"] if "service" in row else row["name"]: row for row in figures}
    assert set(by_service) == {"reporting", "assessment", "planning", "consent"}
    assert by_service["reporting"]["reachable"] is True
    assert by_service["consent"]["attention"] == ["metrics unreachable"]
    assert page.text.count("metrics unreachable") == 3
