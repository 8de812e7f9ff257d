"""PostgreSQL cannot store a NUL character in text or jsonb; the fuzzer found that one in any text
field (an academy's name, say) was a 500 whose log line quoted the statement's parameters. Now it
is a 422 problem, nothing is changed, and the value is in no log."""

from __future__ import annotations

import httpx

from tests.fuzz.conftest import Platform


def test_a_nul_character_in_a_name_is_a_422_and_changes_nothing(platform: Platform) -> None:
    sentinel = "Sentinel\u0000Academy"
    with httpx.Client(base_url=platform.url("assessment"), headers=platform.headers(), timeout=30) as client:
        before = client.get("/academies").json()["items"]
        refused = client.put(f"/academies/{platform.academy_id}", json={"name": sentinel})
        after = client.get("/academies").json()["items"]

    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert "NUL" in refused.json()["detail"] and "Sentinel" not in refused.text
    assert after == before and str(platform.academy_id) in [a["academy_id"] for a in after]
    log = (platform.settings.state_dir / "services" / "assessment.log").read_text()
    assert "Sentinel" not in log
