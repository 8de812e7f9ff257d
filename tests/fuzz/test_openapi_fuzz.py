"""Every operation of every service's OpenAPI, fuzzed with schemathesis over real HTTP against the
running platform: valid and invalid parameters and bodies, with a token that holds every role.

Whatever arrives, a service never answers 5xx, and every answer is one its OpenAPI document
declares: the status code, the content type and the body's schema (problem+json for errors).
The run is bounded and reproducible: a fixed number of examples per operation and mode,
derandomized, so CI sees the same requests every time.
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.conftest import PORTS, Platform

# Examples per operation and mode: 1,822 requests over the 90 operations of the four services.
# FLOURISH_FUZZ_EXAMPLES=80 searches deeper, by hand (4-5 minutes).
EXAMPLES = int(os.environ.get("FLOURISH_FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("service", list(PORTS))
def test_no_request_makes_a_service_fail_or_answer_outside_its_openapi(platform: Platform, service: str) -> None:
    base_url = platform.url(service)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    with requests.Session() as session:
        session.headers.update(platform.headers())
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if _has_input(operation) else [])
            for mode in modes:
                # Every failure is collected, then reported together: a check that failed (schemathesis
                # raises them as a group) or a request that got no answer. Anything else is a bug of
                # the test or the tools, and stops the run.
                try:
                    _fuzz(operation, mode, session, base_url, platform.known_ids)
                except* (Failure, requests.RequestException) as group:
                    failures[f"{mode.value} {operation.label}"] = _described(group)[:2000]
    assert operations >= 10, f"{service}: the OpenAPI document lists only {operations} operations"
    assert not failures, "\n\n".join(f"{label}:\n{failure}" for label, failure in sorted(failures.items()))


def _described(group: BaseExceptionGroup[Any]) -> str:
    """A failure group's own report (schemathesis writes the failures and a curl command into it),
    or its failures one a line."""
    return group.message or "\n".join(str(failure) for failure in group.exceptions)


def _has_input(operation: Any) -> bool:
    """Whether the operation takes anything a request could get wrong (the token is ours to set)."""
    headers = [h for h in operation.headers if h.name != "Authorization"]
    return bool(len(operation.path_parameters) or len(operation.query) or len(operation.body) or headers)


def _fuzz(operation: Any, mode: GenerationMode, session: requests.Session, base_url: str, known_ids: dict[str, str]) -> None:
    @SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode), use_known_ids=st.booleans())
    def run(case: schemathesis.Case, use_known_ids: bool) -> None:
        # Half the valid requests name the trust's real academy, class, pupil and group, so they
        # get past "not found" into the handlers.
        if mode is GenerationMode.POSITIVE and use_known_ids and case.path_parameters:
            case.path_parameters = {
                name: known_ids.get(name, value) for name, value in case.path_parameters.items()
            }
        response = case.call(base_url=base_url, session=session, timeout=30)
        case.validate_response(response, checks=CHECKS)

    run()
