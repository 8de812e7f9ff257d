"""Errors as problem+json: right status and type, and no personal data in the body."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from shared.problems import (
    PROBLEM_MEDIA_TYPE,
    ConcurrencyConflict,
    NotFound,
    Problem,
    ServiceUnavailable,
    UnprocessableEntity,
    install_problem_handlers,
)


class PupilNotEnrolled(Exception):
    """A stand-in for a service's own domain exception."""


class NewPupil(BaseModel):
    display_name: str
    date_of_birth: date
    year_group: int


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = FastAPI()
    install_problem_handlers(
        app,
        {
            PupilNotEnrolled: lambda exc: UnprocessableEntity(
                "the pupil is not enrolled at this academy"
            )
        },
    )

    @app.post("/pupils")
    def register_pupil(pupil: NewPupil) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/pupils/{pupil_id}/profile")
    def profile(pupil_id: str) -> None:
        raise ConcurrencyConflict(
            "stream version 3 expected, found 4", extras={"expected_version": 3}
        )

    @app.get("/pupils/{pupil_id}")
    def read_pupil(pupil_id: str) -> None:
        raise NotFound("no such pupil")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("could not save note for jane.doe@example.org (UPN A123456789012)")

    @app.get("/enrol")
    def enrol() -> None:
        raise PupilNotEnrolled("Jane Doe is not enrolled")

    @app.get("/busy")
    def busy() -> None:
        raise ServiceUnavailable("the event store is not reachable", retry_after_s=3)

    @app.get("/not-ready")
    def not_ready() -> None:  # what /readyz raises: it was a TypeError (a 500) before mypy saw it
        raise ServiceUnavailable("not ready", extras={"checks": {"database": "OSError", "kafka": "ok"}})

    # raise_server_exceptions=True: an exception escaping the app would fail the test.
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


def test_a_problem_renders_as_problem_json(client: TestClient) -> None:
    response = client.get("/pupils/p-1")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json() == {
        "type": "urn:flourish:problem:not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no such pupil",
        "instance": "/pupils/p-1",
    }


def test_extension_members_are_included(client: TestClient) -> None:
    body = client.get("/pupils/p-1/profile").json()
    assert body["status"] == 409
    assert body["type"] == "urn:flourish:problem:concurrency-conflict"
    assert body["expected_version"] == 3


def test_extension_members_cannot_replace_standard_ones() -> None:
    with pytest.raises(ValueError, match="may not replace standard ones"):
        NotFound("x", extras={"status": 200})


def test_a_validation_error_lists_fields_without_echoing_input(client: TestClient) -> None:
    response = client.post(
        "/pupils",
        json={
            "display_name": "Jane Doe",
            "date_of_birth": "14/03/2016",
            "year_group": "jane@example.org",
        },
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == "urn:flourish:problem:validation-error"
    assert {tuple(error["loc"]) for error in body["errors"]} == {
        ("body", "date_of_birth"),
        ("body", "year_group"),
    }
    assert all(set(error) == {"loc", "msg", "type"} for error in body["errors"])
    for personal in ("Jane", "14/03/2016", "jane@example.org"):
        assert personal not in response.text


def test_a_malformed_json_body_is_a_422_problem(client: TestClient) -> None:
    response = client.post(
        "/pupils", content=b'{"display_name": "Jane', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "Jane" not in response.text


def test_an_unhandled_exception_is_a_generic_500_and_is_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="shared.problems"):
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["status"] == 500
    assert body["instance"] == "/boom"
    for leaked in ("RuntimeError", "jane", "A123456789012", "Traceback", "boom()"):
        assert leaked not in response.text
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert record.error_type == "RuntimeError"  # type: ignore[attr-defined]
    assert record.route == "/boom"  # type: ignore[attr-defined]


def test_an_unknown_route_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "instance": "/no/such/route",
    }


def test_a_wrong_method_is_a_405_problem_that_keeps_allow(client: TestClient) -> None:
    response = client.delete("/boom")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["allow"] == "GET"


def test_registered_domain_errors_use_their_factory(client: TestClient) -> None:
    response = client.get("/enrol")
    assert response.status_code == 422
    assert response.json()["detail"] == "the pupil is not enrolled at this academy"
    assert "Jane" not in response.text


def test_service_unavailable_says_when_to_retry(client: TestClient) -> None:
    response = client.get("/busy")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"


def test_service_unavailable_carries_what_is_not_ready(client: TestClient) -> None:
    response = client.get("/not-ready")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "OSError", "kafka": "ok"}


def test_every_problem_class_has_its_own_type() -> None:
    classes: list[type[Problem]] = [Problem, *_subclasses(Problem)]
    assert len({cls.type_ for cls in classes}) == len(classes)


def _subclasses(cls: type[Problem]) -> list[type[Problem]]:
    direct = cls.__subclasses__()
    return direct + [nested for sub in direct for nested in _subclasses(sub)]
