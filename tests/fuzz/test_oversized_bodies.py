"""Oversized bodies and CSVs are refused early, with a problem saying why, and change nothing.

A Content-Length over the route's limit is answered 413 before the body is sent at all (over a
real socket to the running service); a chunked body with no length is cut off once it passes the
limit (over a real socket the upload is refused and the connection closed mid-upload; in-process,
the app pulls no more than the limit of an upload twice as large); an MIS export with too
many rows or an overlong row is refused whole. After each: no new events, no new classes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.assessment.api import MAX_ROSTER_BYTES
from services.assessment.app import app as assessment_app
from services.assessment.domain.roster import MAX_RECORD_CHARS, MAX_ROWS
from shared.limits import DEFAULT_MAX_BODY_BYTES, MIB
from tests.fuzz.conftest import Platform
from tests.integration.assessment.helpers import pupil_rows, roster_csv

CHUNK = 64 * 1024


async def _footprint(engine: AsyncEngine, platform: Platform) -> tuple[int, int]:
    """What an import would change: the trust's events and the academy's classes."""
    async with engine.connect() as conn:
        events = await conn.scalar(text("SELECT count(*) FROM assessment.events WHERE trust_id = :t"),
                                   {"t": platform.trust_id})
        classes = await conn.scalar(text("SELECT count(*) FROM assessment.classes WHERE academy_id = :a"),
                                    {"a": platform.academy_id})
    return int(events or 0), int(classes or 0)


def _head(platform: Platform, path: str, content_type: str, length: str) -> bytes:
    url = httpx.URL(platform.url("assessment"))
    return (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Authorization: {platform.headers()['Authorization']}\r\nContent-Type: {content_type}\r\n{length}\r\n\r\n"
    ).encode()


def _connect(platform: Platform) -> socket.socket:
    url = httpx.URL(platform.url("assessment"))
    return socket.create_connection((url.host, url.port), timeout=30)


def _read_answer(connection: socket.socket) -> bytes:
    """Everything the server sent before it closed (or reset) the connection."""
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # the server closed with our unread upload in its buffer; what it sent first is read
    return answer


def _head_only(platform: Platform, path: str, declared: int, content_type: str) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    """Send a request's head, claiming `declared` bytes of body, and read the answer without
    sending any of them: a server that waited for the body would never answer (the timeout fails the test)."""
    with _connect(platform) as connection:
        connection.sendall(_head(platform, path, content_type, f"Content-Length: {declared}"))
        return _parsed(_read_answer(connection))


def _parsed(answer: bytes) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.decode().lower().split(": ", 1) for line in header_block.split(b"\r\n"))
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(
    ("route", "declared", "limit", "content_type"),
    [
        ("/academies/{academy_id}/roster-imports", 10 * 1024**3, MAX_ROSTER_BYTES, "text/csv"),
        ("/academies/{academy_id}/roster-imports", MAX_ROSTER_BYTES + 1, MAX_ROSTER_BYTES, "text/csv"),
        ("/observations", DEFAULT_MAX_BODY_BYTES + 1, DEFAULT_MAX_BODY_BYTES, "application/json"),
    ],
    ids=["roster-10GB", "roster-limit+1", "observation-limit+1"],
)
async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    platform: Platform, engine: AsyncEngine, route: str, declared: int, limit: int, content_type: str
) -> None:
    before = await _footprint(engine, platform)
    path = route.format(academy_id=platform.academy_id)

    status, headers, problem = _head_only(platform, path, declared, content_type)

    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert problem["type"] == "urn:flourish:problem:payload-too-large" and problem["instance"] == path
    assert problem["max_body_bytes"] == limit and f"at most {limit // MIB} MB" in problem["detail"]
    assert headers["connection"] == "close"
    assert await _footprint(engine, platform) == before


async def test_a_chunked_upload_over_the_limit_is_refused_and_the_connection_closed_mid_upload(
    platform: Platform, engine: AsyncEngine
) -> None:
    before = await _footprint(engine, platform)
    path = f"/academies/{platform.academy_id}/roster-imports"
    sent, planned = 0, 10 * MAX_ROSTER_BYTES
    with _connect(platform) as connection:
        connection.sendall(_head(platform, path, "text/csv", "Transfer-Encoding: chunked"))
        try:
            while sent < planned:
                connection.sendall(b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK))
                sent += CHUNK
        except (BrokenPipeError, ConnectionResetError):
            pass  # cut off: the server answered and closed while we were still sending
        status, headers, problem = _parsed(_read_answer(connection))

    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert problem["max_body_bytes"] == MAX_ROSTER_BYTES
    # What got out before the reset is the limit plus what the two sockets' buffers held.
    assert sent < planned, "the server read the whole 50 MB upload"
    assert await _footprint(engine, platform) == before


@pytest.fixture
async def assessment_in_process(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A second assessment process (API only) on the platform's database, served in-process, so
    the test sees exactly how much of a request body the service pulls."""
    app = assessment_app(platform.settings.model_copy(update={"role": "api"}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://assessment", timeout=60) as client:
            yield client


async def test_a_chunked_upload_is_cut_off_at_the_limit_and_changes_nothing(
    platform: Platform, engine: AsyncEngine, assessment_in_process: httpx.AsyncClient
) -> None:
    before = await _footprint(engine, platform)
    row = b"Z01000000001A,Fuzz,Ava,01/02/2017,F,4,4Z\r\n"
    pulled = 0

    async def twice_the_limit() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b"UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group\r\n"
        while pulled < 2 * MAX_ROSTER_BYTES:
            pulled += CHUNK
            yield row * (CHUNK // len(row))

    response = await assessment_in_process.post(
        f"/academies/{platform.academy_id}/roster-imports", content=twice_the_limit(),
        headers={**platform.headers(), "Content-Type": "text/csv"},
    )

    assert response.status_code == 413 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["max_body_bytes"] == MAX_ROSTER_BYTES
    assert MAX_ROSTER_BYTES < pulled <= MAX_ROSTER_BYTES + CHUNK, "the service stopped reading at the limit"
    assert await _footprint(engine, platform) == before


async def test_a_json_body_streamed_past_the_default_limit_is_413_not_a_parse_error(
    platform: Platform, engine: AsyncEngine, assessment_in_process: httpx.AsyncClient
) -> None:
    before = await _footprint(engine, platform)

    async def padded_observation() -> AsyncIterator[bytes]:
        yield b'{"note": "'
        for _ in range(DEFAULT_MAX_BODY_BYTES // CHUNK + 1):
            yield b"x" * CHUNK
        yield b'"}'

    response = await assessment_in_process.post("/observations", content=padded_observation(),
                                                headers={**platform.headers(), "Content-Type": "application/json"})

    assert response.status_code == 413, response.text
    assert response.json()["type"] == "urn:flourish:problem:payload-too-large"
    assert await _footprint(engine, platform) == before


@pytest.mark.parametrize("shape", ["too-many-rows", "overlong-row"])
async def test_an_mis_export_with_too_many_rows_or_an_overlong_row_is_refused_whole(
    platform: Platform, engine: AsyncEngine, shape: str
) -> None:
    if shape == "too-many-rows":
        rows, expected = pupil_rows(MAX_ROWS + 1, "4Q"), f"the file has more than {MAX_ROWS} pupils"
    else:
        rows = [*pupil_rows(2, "4Q"), f"Z01000000009A,{'x' * MAX_RECORD_CHARS},Ava,01/02/2017,F,4,4Q"]
        expected = f"the row is longer than {MAX_RECORD_CHARS} characters"
    data = roster_csv(rows)
    assert len(data) < MAX_ROSTER_BYTES, "refused for its rows, not its size"
    before = await _footprint(engine, platform)

    async with httpx.AsyncClient(base_url=platform.url("assessment"), timeout=60) as client:
        response = await client.post(f"/academies/{platform.academy_id}/roster-imports", content=data,
                                     headers={**platform.headers(), "Content-Type": "text/csv"})

    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problems = response.json()["problems"]
    assert [p["message"] for p in problems] == [expected]
    assert problems[0]["row"] == (None if shape == "too-many-rows" else 4)
    assert await _footprint(engine, platform) == before
