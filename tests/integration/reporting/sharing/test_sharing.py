"""Sharing over signed webhooks, end to end: the reporting service asks the real consent service,
delivers to a real HTTP receiver on 127.0.0.1, retries on a schedule, and tells agencies to
delete what they received when consent is withdrawn."""

from __future__ import annotations

import itertools
import uuid

import orjson
import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.reporting.sharing.tables import agencies, deliveries, shares
from shared.auth import Role
from tests.conftest import counter
from tests.integration.reporting.sharing.conftest import SCHEDULE, Receiver, Stack, eventually


def verify(secret: str, request: dict) -> dict:  # type: ignore[type-arg]
    """The off-the-shelf Standard Webhooks verifier: raises if the signature does not verify."""
    return Webhook(secret).verify(request["body"], request["headers"])  # type: ignore[no-any-return]


async def test_share_without_consent_is_blocked_and_nothing_is_sent(stack: Stack, receiver: Receiver) -> None:
    (pupil,) = await stack.consent.enrol()
    agency = await stack.agency(receiver.url)
    response = await stack.share(agency["agency_id"], pupil)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "blocked" and body["delivery_id"] is None
    async with stack.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(deliveries).where(deliveries.c.pupil_id == pupil))
    assert count == 0
    assert receiver.received == []


async def test_share_with_consent_is_delivered_once_and_signed(stack: Stack, receiver: Receiver) -> None:
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    assert agency["signing_secret"].startswith("whsec_")
    listed = (await stack.client.get("/sharing/agencies", headers=stack.staff())).json()["items"]
    assert all("signing_secret" not in a and "secret" not in str(a) for a in listed)
    delivered = counter("flourish_webhook_deliveries", outcome="delivered")

    response = await stack.share(agency["agency_id"], pupil)
    assert response.status_code == 201, response.text
    share = response.json()
    assert share["status"] == "accepted" and share["consent_obtained"] is True and share["lawful_basis"] == "consent"
    delivery_id = share["delivery_id"]

    row = await eventually(lambda: _status(stack, delivery_id, "delivered"))
    assert row.payload is None  # the disclosed content is not kept once delivered
    assert len(receiver.received) == 1
    request = receiver.received[0]
    assert request["headers"]["webhook-id"] == delivery_id
    payload = verify(agency["signing_secret"], request)
    assert payload["type"] == "share.created"
    assert payload["data"]["pupil_id"] == str(pupil) and payload["data"]["document"]["strand"] == "being"
    assert delivered.delta() == 1
    # A wrong secret does not verify: the check above can fail.
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(WebhookVerificationError):
        verify(other, request)

    log = (await stack.client.get(f"/sharing/agencies/{agency['agency_id']}/deliveries", headers=stack.staff())).json()
    assert [(i["delivery_id"], i["outcome"]) for i in log["items"]] == [(delivery_id, "delivered")]
    # A delivered delivery is never sent again.
    attempts = len(await stack.attempts(delivery_id))
    replay = await stack.client.post(f"/sharing/deliveries/{delivery_id}/replay", headers=stack.staff(Role.dpo, []))
    assert replay.status_code == 409
    assert len(receiver.received) == 1 and len(await stack.attempts(delivery_id)) == attempts
    assert (await stack.delivery(delivery_id)).status == "delivered"


async def test_withdrawal_sends_a_deletion_notice_and_stops_pending_shares(stack: Stack, receiver: Receiver) -> None:
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    first = (await stack.share(agency["agency_id"], pupil)).json()
    await eventually(lambda: _status(stack, first["delivery_id"], "delivered"))

    # A second share is still pending when consent goes: the agency keeps refusing it for now.
    receiver.reject = lambda body: orjson.loads(body)["data"].get("document_kind") == "profile"
    second = (await stack.share(agency["agency_id"], pupil, "profile")).json()
    assert second["status"] == "accepted"
    await eventually(lambda: stack.attempts(second["delivery_id"]))

    await stack.withdraw(pupil)

    async def notice() -> dict | None:  # type: ignore[type-arg]
        found = [r for r in receiver.received if orjson.loads(r["body"])["type"] == "share.deletion_requested"]
        return found[0] if found else None

    request = await eventually(notice)
    payload = verify(agency["signing_secret"], request)
    assert payload["data"]["pupil_id"] == str(pupil)
    assert payload["data"]["share_ids"] == [first["share_id"]]
    held = await eventually(lambda: _status(stack, second["delivery_id"], "blocked"))
    assert held.last_error == "consent_withdrawn" and held.payload is None
    # Nothing but the first share and the notice was accepted by the agency, and the refused share
    # was never tried again once blocked.
    accepted = [r for r in receiver.received if not receiver.reject(r["body"])]
    assert sorted(orjson.loads(r["body"])["type"] for r in accepted) == ["share.created", "share.deletion_requested"]
    # Whichever comes first blocks it: the withdrawal reaching the sharing consumer (every try so far
    # "retried"), or the next try asking consent again at delivery (that try "blocked", nothing sent).
    tries = await stack.attempts(second["delivery_id"])
    sent = [t for t in tries if t.outcome == "retried"]
    assert [t.outcome for t in tries] in (["retried"] * len(sent), ["retried"] * len(sent) + ["blocked"])
    assert held.attempts == len(tries)
    assert sum(1 for r in receiver.received if r["headers"]["webhook-id"] == second["delivery_id"]) == len(sent)
    # A new share for the same pupil and category is now blocked when asked.
    third = (await stack.share(agency["agency_id"], pupil)).json()
    assert third["status"] == "blocked"


async def test_a_failing_receiver_gets_the_event_once_on_the_fifth_try_on_schedule(stack: Stack, receiver: Receiver) -> None:
    receiver.fail_first = 4
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    share = (await stack.share(agency["agency_id"], pupil)).json()
    delivery_id = share["delivery_id"]
    await eventually(lambda: _status(stack, delivery_id, "delivered"), timeout=60)

    assert len(receiver.received) == 5
    assert {r["headers"]["webhook-id"] for r in receiver.received} == {delivery_id}
    verify(agency["signing_secret"], receiver.received[-1])
    tries = await stack.attempts(delivery_id)
    assert [t.outcome for t in tries] == ["retried"] * 4 + ["delivered"]
    for before, after in itertools.pairwise(tries):
        nominal = SCHEDULE.delay_after(before.attempt)
        waited = (after.scheduled_for - before.attempted_at).total_seconds()
        assert nominal <= waited <= nominal * (1 + SCHEDULE.jitter) + 1e-3, (before.attempt, waited)
        assert after.attempted_at >= after.scheduled_for  # never earlier than the schedule allows


async def test_the_last_failed_try_dead_letters_and_a_replay_delivers(stack: Stack, receiver: Receiver) -> None:
    receiver.fail_first = 5
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(receiver.url)
    delivery_id = (await stack.share(agency["agency_id"], pupil)).json()["delivery_id"]
    failed = await eventually(lambda: _status(stack, delivery_id, "failed"), timeout=60)
    assert failed.attempts == 5 and failed.payload is not None
    replay = await stack.client.post(f"/sharing/deliveries/{delivery_id}/replay", headers=stack.staff(Role.dpo, []))
    assert replay.status_code == 200, replay.text
    await eventually(lambda: _status(stack, delivery_id, "delivered"))
    assert len(receiver.received) == 6


async def test_private_or_plain_http_endpoints_are_refused_and_nothing_is_stored(stack: Stack) -> None:
    refused = ["http://10.0.0.7/hooks", "https://192.168.1.20/hooks", "https://169.254.169.254/latest",
               "https://[::1]/hooks", "https://127.0.0.2/hooks", "ftp://agency.example/hooks"]
    for url in refused:
        response = await stack.client.post("/sharing/agencies", headers=stack.staff(Role.trust_admin), json={
            "category": "camhs", "organisation": "Somewhere", "endpoint_url": url})
        assert response.status_code == 422, (url, response.text)
    async with stack.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(agencies).where(
            agencies.c.trust_id == stack.consent.trust_id))
    assert count == 0


async def test_roles_scope_and_unknown_agencies(stack: Stack, receiver: Receiver) -> None:
    (mine,) = await stack.consent.enrol()
    (theirs,) = await stack.consent.enrol(academy_id=stack.consent.other_academy_id)
    await stack.grant(mine)
    agency = await stack.agency(receiver.url)
    response = await stack.share(agency["agency_id"], theirs)
    assert response.status_code == 403, response.text
    response = await stack.share(str(uuid.uuid4()), mine)
    assert response.status_code == 422, response.text
    practitioner = stack.staff(Role.practitioner)
    response = await stack.client.post("/sharing/shares", headers=practitioner, json={
        "agency_id": agency["agency_id"], "pupil_id": str(mine), "document_kind": "report",
        "document_id": (await stack.documents(mine)).id_of("report")})
    assert response.status_code == 403
    assert receiver.received == []
    # None of the three refusals recorded a share or queued a webhook.
    async with stack.engine.connect() as conn:
        for table in (shares, deliveries):
            assert await conn.scalar(select(func.count()).select_from(table).where(
                table.c.trust_id == stack.consent.trust_id)) == 0, table.name


async def _status(stack: Stack, delivery_id: str, status: str):  # type: ignore[no-untyped-def]
    row = await stack.delivery(delivery_id)
    return row if row is not None and row.status == status else None
