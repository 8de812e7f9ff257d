"""The audit's day filters take a day as YYYY-MM-DD and nothing else: pydantic alone reads `to=0`
as 1 January 1970 (a Unix time), answering an audit question nobody asked. Found by schemathesis'
negative_data_rejection check; every operation with a `from` or `to` parameter is asked."""

from __future__ import annotations

import httpx
import pytest

from tests.fuzz.conftest import Platform

NOT_DAYS = ["0", "1700000000", "2026-1-5", "20260105", "2026-01-05T00:00:00"]


@pytest.mark.parametrize("parameter", ["from", "to"])
def test_a_day_filter_that_is_not_yyyy_mm_dd_is_refused(platform: Platform, parameter: str) -> None:
    with httpx.Client(base_url=platform.url("reporting"), headers=platform.headers(), timeout=30) as client:
        document = client.get("/openapi.json").json()
        filtered = [path for path, operations in document["paths"].items()
                    if any(p["name"] == parameter for p in operations.get("get", {}).get("parameters", []))]
        for path in filtered:
            path = path.format(pupil_id=platform.pupil_ids[1])
            assert client.get(path, params={parameter: "2026-01-05"}).status_code == 200, path
            for value in NOT_DAYS:
                refused = client.get(path, params={parameter: value})
                assert refused.status_code == 422, f"{path}?{parameter}={value}: {refused.status_code}"
                assert refused.json()["errors"][0]["loc"] == ["query", parameter]
    assert len(filtered) >= 4, "the audit's queries take day filters"
