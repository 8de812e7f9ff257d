"""Agencies have a lifecycle (issue 16 item 2), tried as a SENCo, a DPO and a trust admin would,
through the HTTP API, against a real webhook receiver whose requests are checked with the
off-the-shelf `standardwebhooks` verifier: only a DPO or trust admin registers, re-points, rotates
and deactivates; nothing is shared with an endpoint until it answered a signed
`endpoint.verification` event; during a rotation both secrets sign, then only the new one; a
deactivated agency gets no share but still gets the deletion notice for what it holds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.reporting.app import ReportingServiceSettings
from services.reporting.app import app as reporting_service
from services.reporting.sharing.tables import agencies, deliveries, shares
from services.reporting.tables import kernel
from shared.auth import DevIssuer, Role
from tests.integration.consent.conftest import running_consent
from tests.integration.reporting.sharing.conftest import SCHEDULE, Receiver, Stack, eventually

OVERLAP_S = 4.0


def verifies(secret: str, request: dict[str, Any]) -> bool:
    try:
        Webhook(secret).verify(request["body"], request["headers"])
    except WebhookVerificationError:
        return False
    return True


def typed(request: dict[str, Any]) -> str:
    return orjson.loads(request["body"])["type"]  # type: ignore[no-any-return]


async def share_events(stack: Stack, share_id: str) -> list[str]:
    async with stack.engine.connect() as conn:
        return list((await conn.execute(select(kernel.events.c.event_type).where(
            kernel.events.c.stream_id == f"share-{share_id}").order_by(kernel.events.c.stream_version))).scalars())


@pytest.fixture
async def short_overlap(stack_settings, topic_prefix, tmp_path, publisher, consent_settings, engine) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    """The stack with a rotation overlap of a few seconds (only tests shorten it, through settings)."""
    async with running_consent(stack_settings, topic_prefix, tmp_path, publisher, consent_settings) as consent:
        settings = stack_settings.model_copy(update={
            "topic_prefix": topic_prefix, "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json",
            "relay_poll_interval_s": 0.1,
        })
        sharing = SCHEDULE.model_copy(update={"rotation_overlap_s": OVERLAP_S})
        app = reporting_service(ReportingServiceSettings(kernel=settings, sharing=sharing),
                                consent_transport=httpx.ASGITransport(app=consent.app))
        async with (app.router.lifespan_context(app),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as client):
            yield Stack(consent, client, engine, DevIssuer(settings))


async def test_a_senco_cannot_register_rotate_repoint_or_deactivate(stack: Stack, receiver: Receiver) -> None:
    senco = stack.staff(Role.senco)
    response = await stack.client.post("/sharing/agencies", headers=senco, json={
        "category": "camhs", "organisation": "North CAMHS", "endpoint_url": receiver.url})
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    async with stack.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(agencies).where(
            agencies.c.trust_id == stack.consent.trust_id)) == 0
    assert receiver.verifications == [] and receiver.received == []
    agency = await stack.agency(receiver.url)
    path = f"/sharing/agencies/{agency['agency_id']}"
    for method, url, body in (("POST", f"{path}/secret-rotation", None), ("POST", f"{path}/deactivation", None),
                              ("POST", f"{path}/verification", None),
                              ("PUT", f"{path}/endpoint", {"endpoint_url": receiver.url + "/other"})):
        response = await stack.client.request(method, url, headers=senco, json=body)
        assert response.status_code == 403, (url, response.text)
    async with stack.engine.connect() as conn:
        row = (await conn.execute(select(agencies).where(agencies.c.agency_id == uuid.UUID(agency["agency_id"])))).one()
    assert row.active and row.previous_secret_wrapped is None and row.endpoint_url == receiver.url
    # A DPO may, as a trust admin may.
    response = await stack.client.post(f"{path}/secret-rotation", headers=stack.staff(Role.dpo))
    assert response.status_code == 200, response.text


async def test_nothing_is_shared_until_the_endpoint_answers_a_signed_verification(stack: Stack, receiver: Receiver) -> None:
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    receiver.verification_status = 500  # not (yet) the agency's endpoint, or not ready
    agency = await stack.agency(receiver.url)
    assert agency["verified"] is False and agency["verification"]["status_code"] == 500
    (asked,) = receiver.verifications
    assert verifies(agency["signing_secret"], asked)
    event = orjson.loads(asked["body"])
    assert event["type"] == "endpoint.verification" and event["data"]["agency_id"] == agency["agency_id"]
    assert set(event["data"]) == {"agency_id", "trust_id", "challenge"}  # nothing personal

    response = await stack.share(agency["agency_id"], pupil)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    async with stack.engine.connect() as conn:
        for table in (shares, deliveries):
            assert await conn.scalar(select(func.count()).select_from(table).where(table.c.pupil_id == pupil)) == 0

    receiver.verification_status = 200
    path = f"/sharing/agencies/{agency['agency_id']}"
    verified = (await stack.client.post(f"{path}/verification", headers=stack.staff(Role.dpo))).json()
    assert verified["verified"] is True, verified
    response = await stack.share(agency["agency_id"], pupil)
    assert response.status_code == 201 and response.json()["status"] == "accepted", response.text
    (delivered,) = await eventually(lambda: _received(receiver, 1))
    assert verifies(agency["signing_secret"], delivered)

    # A new endpoint is unverified again: a share queued before is not sent to it, nor is a new one.
    receiver.reject = lambda body: True
    queued = (await stack.share(agency["agency_id"], pupil)).json()
    await eventually(lambda: _received(receiver, 2))
    receiver.verification_status = 500
    moved = await stack.client.put(f"{path}/endpoint", headers=stack.staff(Role.trust_admin),
                                   json={"endpoint_url": receiver.url + "/v2"})
    assert moved.status_code == 200 and moved.json()["verified"] is False, moved.text
    receiver.reject = None
    response = await stack.share(agency["agency_id"], pupil)
    assert response.status_code == 409, response.text
    await asyncio.sleep(0.3)  # a try already under way when the endpoint changed
    seen = len(receiver.received)
    await asyncio.sleep(2.0)
    assert len(receiver.received) == seen, "a share went to an unverified endpoint"
    tries = await stack.attempts(str(queued["delivery_id"]))
    assert tries[-1].error == "endpoint_unverified", [t.error for t in tries]


async def _received(receiver: Receiver, n: int) -> list[dict[str, Any]] | None:
    return receiver.received if len(receiver.received) >= n else None


async def test_rotation_signs_with_both_secrets_for_the_overlap_then_only_the_new(
        short_overlap: Stack, receiver: Receiver) -> None:
    stack = short_overlap
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    old = agency["signing_secret"]
    path = f"/sharing/agencies/{agency['agency_id']}"

    response = await stack.client.post(f"{path}/secret-rotation", headers=stack.staff(Role.trust_admin))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    rotated = response.json()
    new, until = rotated["signing_secret"], datetime.fromisoformat(rotated["rotation_overlap_until"])
    assert new != old
    listed = (await stack.client.get("/sharing/agencies", headers=stack.staff())).json()["items"]
    assert new not in str(listed) and old not in str(listed)

    assert (await stack.share(agency["agency_id"], pupil)).status_code == 201
    (during,) = await eventually(lambda: _received(receiver, 1))
    assert datetime.fromisoformat(orjson.loads(during["body"])["timestamp"]) < until
    assert len(during["headers"]["webhook-signature"].split(" ")) == 2
    assert verifies(new, during), "a receiver holding only the new secret verifies during the overlap"
    assert verifies(old, during), "a receiver holding only the old secret verifies during the overlap"

    await asyncio.sleep(max(0.0, (until - datetime.now(until.tzinfo)).total_seconds()) + 0.5)
    assert (await stack.share(agency["agency_id"], pupil)).status_code == 201
    await eventually(lambda: _received(receiver, 2))
    after = receiver.received[1]
    assert len(after["headers"]["webhook-signature"].split(" ")) == 1
    assert verifies(new, after), "the new secret verifies after the overlap"
    assert not verifies(old, after), "the old secret is dropped after the overlap"


async def test_a_deactivated_agency_gets_no_share_but_still_the_deletion_notice(stack: Stack, receiver: Receiver) -> None:
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    held = (await stack.share(agency["agency_id"], pupil)).json()
    await eventually(lambda: _delivered(stack, str(held["delivery_id"])))

    # A second share the endpoint keeps refusing: pending, retried, when the agency is deactivated.
    receiver.reject = lambda body: b'"share.created"' in body
    pending = (await stack.share(agency["agency_id"], pupil)).json()
    assert pending["status"] == "accepted"
    await eventually(lambda: _received(receiver, 2))
    response = await stack.client.post(f"/sharing/agencies/{agency['agency_id']}/deactivation",
                                       headers=stack.staff(Role.dpo))
    assert response.status_code == 200, response.text
    assert response.json()["shares_stopped"] == 1
    seen = len(receiver.received)
    row = await stack.delivery(str(pending["delivery_id"]))
    assert row.status == "blocked" and row.payload is None and row.last_error == "agency_deactivated"
    assert any(t.endswith("ShareBlocked.v1") for t in await share_events(stack, pending["share_id"]))

    # Nothing further is shared with it.
    response = await stack.share(agency["agency_id"], pupil)
    assert response.status_code == 422, response.text
    listed = (await stack.client.get("/sharing/agencies", headers=stack.staff())).json()["items"]
    assert [a["active"] for a in listed] == [False]

    # The family withdraws: the agency still holds the first share, so it is told to delete it.
    receiver.reject = None
    await stack.withdraw(pupil)
    notice = await eventually(lambda: _notice(receiver), timeout=60)
    assert verifies(agency["signing_secret"], notice)
    assert orjson.loads(notice["body"])["data"]["share_ids"] == [str(held["share_id"])]
    shares_after = [r for r in receiver.received[seen:] if typed(r) == "share.created"]
    assert shares_after == [], "a deactivated agency received a share"


async def _delivered(stack: Stack, delivery_id: str) -> bool:
    row = await stack.delivery(delivery_id)
    return row is not None and row.status == "delivered"


async def _notice(receiver: Receiver) -> dict[str, Any] | None:
    found = [r for r in receiver.received if typed(r) == "share.deletion_requested"]
    return found[0] if found else None
