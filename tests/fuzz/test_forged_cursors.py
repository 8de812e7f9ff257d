"""A cursor is opaque base64 JSON, so a client can forge one that the fuzzer's random strings never
produce: valid JSON whose fields are missing or of the wrong type. On every list operation of every
service (found in its OpenAPI document: those with a `cursor` parameter) such a cursor is refused
with a problem, or, where the forged position is a possible one, answered with the page after it;
never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.fuzz.conftest import PORTS, Platform

# The position fields the four APIs put in their cursors; a forged cursor sets all of them at once.
FIELDS = ("version", "academy_id", "name", "pupil_id", "group_id", "observed_at", "observation_id", "started_at",
          "assessment_id", "plan_id", "session_id", "id", "before", "t", "s", "offset", "position")
WRONG_VALUES: list[Any] = ["x", 5, -1, 2**63, 10**30, 1.5, True, None, [1], {"a": 1}, "2026-01-01T00:00:00+00:00"]


def _cursor(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


FORGED = {
    "empty object": _cursor({}),
    "a list": _cursor([1, 2]),
    **{f"every field {value!r}": _cursor(dict.fromkeys(FIELDS, value)) for value in WRONG_VALUES},
}


@pytest.mark.parametrize("service", list(PORTS))
def test_a_forged_cursor_is_a_400_problem_on_every_list(platform: Platform, service: str) -> None:
    base_url = platform.url(service)
    with httpx.Client(base_url=base_url, headers=platform.headers(), timeout=30) as client:
        document = client.get("/openapi.json").json()
        lists = [path for path, operations in document["paths"].items()
                 if any(p["name"] == "cursor" for p in operations.get("get", {}).get("parameters", []))]
        failures = []
        for template in lists:
            path = template.format_map(_Ids(platform.known_ids))
            for label, cursor in FORGED.items():
                response = client.get(path, params={"cursor": cursor})
                problem = response.headers.get("content-type") == "application/problem+json"
                if response.status_code >= 500 or (response.status_code >= 400 and not problem):
                    failures.append(f"GET {template} with a cursor of {label}: {response.status_code} {response.text[:200]}")
    assert lists, f"{service} has no list with a cursor"
    assert not failures, "\n".join(failures)


class _Ids(dict[str, str]):
    """Known ids for path parameters; a fresh uuid for any other (its list is then a 404 or empty)."""

    def __missing__(self, key: str) -> str:
        return str(uuid.uuid4())
