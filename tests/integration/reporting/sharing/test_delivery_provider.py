"""Delivery like a webhook provider (issue 16, items 3 and 4), through the public API with the real
consent service, PostgreSQL, Kafka and an HTTP receiver verified with `standardwebhooks`:

- consent withdrawn after a share is accepted and before its delivery: nothing reaches the agency
  and ShareBlocked is recorded, by the check at delivery alone (the reporting service here does
  not hear the withdrawal event: its topics are its own, as a lagging consumer would be);
- consent that cannot be asked at delivery: the delivery waits and retries, never goes out unasked;
- `410 Gone` disables the endpoint, and the deletion notice it is then owed is listed for the DPO
  as undeliverable, never dropped; an endpoint failing for `disable_after_failing_s` is disabled."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
import uvicorn
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from flourish.cli import app as cli
from flourish.kafka_acls import deprovision, provision
from services.reporting.app import ReportingServiceSettings
from services.reporting.app import app as reporting_service
from services.reporting.sharing import SharingSettings
from services.reporting.sharing.tables import agencies, attempts, deliveries
from services.reporting.tables import kernel
from shared.auth import DevIssuer, Role
from tests.integration.consent.conftest import running_consent
from tests.integration.reporting.sharing.conftest import Stack, eventually

# Shortened for the test through settings, as only tests may: six tries over about six seconds,
# and an endpoint disabled after failing for 1.5 s (five days in every environment).
QUICK = SharingSettings(allowed_private_networks=["127.0.0.1/32"], retry_schedule_s=[0, 0.2, 0.4, 0.8, 1.6, 3.2],
                        jitter=0.1, poll_interval_s=0.05, disable_after_failing_s=1.5)


class ConsentLine(httpx.AsyncBaseTransport):
    """The reporting service's line to the consent service's sharing decisions: up, or cut after
    `allow` more questions (each then fails to connect, as an unreachable service does). Other
    requests (data keys, the family's contact) pass: whether and when they are made depends on caches
    and the notice sender, not on the test."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.allow: int | None = None
        # The pupil whose questions the line counts and cuts: the database is the run's, and this
        # service's worker also asks about other tests' deliveries still pending there.
        self.pupil: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if (self.allow is not None and request.url.path.endswith("/sharing-decisions")
                and request.url.params.get("pupil_id") == self.pupil):
            if self.allow <= 0:
                raise httpx.ConnectError("consent service unreachable", request=request)
            self.allow -= 1
        return await self.inner.handle_async_request(request)


@dataclass
class Hooks:
    """An agency's endpoint: records every request, answers `status(body)` (204 by default)."""

    url: str = ""
    status: Callable[[bytes], int] = lambda body: 204
    received: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if b'"type":"endpoint.verification"' in body:  # the endpoint proves it is the agency's (answered, not counted)
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.received.append({"headers": {k.decode(): v.decode() for k, v in scope["headers"]}, "body": body,
                              "at": datetime.now(UTC)})
        await send({"type": "http.response.start", "status": self.status(body), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.received if orjson.loads(r["body"])["type"] == kind]


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    hook = Hooks(url=f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    server = uvicorn.Server(uvicorn.Config(hook, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - a test fixture waiting for its server
        await asyncio.sleep(0.01)
    yield hook
    server.should_exit = True
    await task


@asynccontextmanager
async def platform(stack_settings: Any, topic_prefix: str, tmp_path: Any, publisher: Any, consent_settings: Any,
                   engine: Any, *, hears_consent: bool) -> AsyncIterator[tuple[Stack, ConsentLine]]:
    async with running_consent(stack_settings, topic_prefix, tmp_path, publisher, consent_settings) as consent:
        settings = stack_settings.model_copy(update={
            # Topics of its own: this reporting service never hears the consent service's events.
            "topic_prefix": topic_prefix if hears_consent else f"{topic_prefix}deaf.",
            "state_dir": tmp_path, "jwks_path": tmp_path / "dev-issuer" / "jwks.json", "relay_poll_interval_s": 0.1,
        })
        if not hears_consent:
            await provision(settings)  # the deaf prefix's topics and ACLs, as Kafka's admin
        line = ConsentLine(httpx.ASGITransport(app=consent.app))
        app = reporting_service(ReportingServiceSettings(kernel=settings, sharing=QUICK), consent_transport=line)
        try:
            async with (app.router.lifespan_context(app),
                        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as client):
                yield Stack(consent, client, engine, DevIssuer(settings)), line
        finally:
            if not hears_consent:
                await deprovision(settings, settings.topic_prefix)


@pytest.fixture
def consent_settings():  # type: ignore[no-untyped-def]
    from services.consent.app import ConsentSettings

    return ConsentSettings(run_retention_scheduler=False)


@pytest.fixture
async def deaf(stack_settings, topic_prefix, tmp_path, publisher, consent_settings, engine):  # type: ignore[no-untyped-def]
    async with platform(stack_settings, topic_prefix, tmp_path, publisher, consent_settings, engine,
                        hears_consent=False) as found:
        yield found


@pytest.fixture
async def hearing(stack_settings, topic_prefix, tmp_path, publisher, consent_settings, engine):  # type: ignore[no-untyped-def]
    async with platform(stack_settings, topic_prefix, tmp_path, publisher, consent_settings, engine,
                        hears_consent=True) as found:
        yield found


async def recorded_types(stack: Stack, share_id: str) -> list[str]:
    events = kernel.events
    async with stack.engine.connect() as conn:
        rows = (await conn.execute(select(events.c.event_type).where(events.c.stream_id == f"share-{share_id}")
                                   .order_by(events.c.stream_version))).all()
    return [row.event_type for row in rows]


async def status_of(stack: Stack, delivery_id: str, *statuses: str) -> Any:
    row = await stack.delivery(delivery_id)
    return row if row is not None and row.status in statuses else None


def dpo(stack: Stack) -> dict[str, str]:
    return stack.staff(Role.dpo, [])


async def test_consent_withdrawn_before_delivery_sends_nothing_and_records_share_blocked(
        deaf: tuple[Stack, ConsentLine], hooks: Hooks) -> None:
    stack, line = deaf
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(hooks.url)
    line.pupil, line.allow = str(pupil), 1  # the share's own question is answered; the line is cut after it
    share = (await stack.share(agency["agency_id"], pupil)).json()
    assert share["status"] == "accepted"

    # The worker has tried (consent could not be asked) and sent nothing.
    await eventually(lambda: _tried(stack, share["delivery_id"]))
    await stack.withdraw(pupil)  # at the consent service; this reporting service never hears of it
    line.allow = None

    held = await eventually(lambda: status_of(stack, share["delivery_id"], "blocked", "delivered"), timeout=30)
    assert held.status == "blocked" and held.last_error == "consent_withdrawn" and held.payload is None
    assert hooks.received == []  # nothing reached the agency
    tries = [t.outcome for t in await _attempts(stack, share["delivery_id"])]
    assert tries[-1] == "blocked" and set(tries[:-1]) == {"retried"}
    assert await recorded_types(stack, share["share_id"]) == [
        "flourish.reporting.ReportShared.v1", "flourish.reporting.ShareBlocked.v1"]


async def test_consent_that_cannot_be_asked_holds_the_delivery_until_it_can(
        deaf: tuple[Stack, ConsentLine], hooks: Hooks) -> None:
    stack, line = deaf
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(hooks.url)
    line.pupil, line.allow = str(pupil), 1
    share = (await stack.share(agency["agency_id"], pupil)).json()
    assert share["status"] == "accepted"

    async def two_tries() -> list[Any] | None:
        tries = await _attempts(stack, share["delivery_id"])
        return tries if len(tries) >= 2 else None

    tries = await eventually(two_tries, timeout=30)
    assert {(t.outcome, t.error) for t in tries} == {("retried", "consent_unavailable")}
    assert hooks.received == []  # never unasked
    line.allow = None

    await eventually(lambda: status_of(stack, share["delivery_id"], "delivered"), timeout=30)
    assert len(hooks.received) == 1
    sent = Webhook(agency["signing_secret"]).verify(hooks.received[0]["body"], hooks.received[0]["headers"])
    assert sent["type"] == "share.created"
    assert sent["data"]["trust_id"] == str(stack.consent.trust_id)
    assert sent["data"]["academy_id"] in {str(a) for a in stack.consent.academies}
    assert sent["data"]["share_id"] == share["share_id"]
    # The body is what reporting's /openapi.json publishes for it under `webhooks`.
    document = (await stack.client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1") and set(document["webhooks"]) >= {"share.created",
                                                                                   "share.deletion_requested"}
    schema = document["webhooks"]["share.created"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    published = {**schema, "components": document["components"]}
    jsonschema.validate(sent, published)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**sent, "data": {**sent["data"], "trust_id": None}}, published)


async def test_410_disables_the_endpoint_and_the_deletion_notice_it_is_owed_is_listed_undeliverable(
        hearing: tuple[Stack, ConsentLine], hooks: Hooks) -> None:
    stack, _ = hearing
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(hooks.url)
    first = (await stack.share(agency["agency_id"], pupil)).json()
    await eventually(lambda: status_of(stack, first["delivery_id"], "delivered"))

    hooks.status = lambda body: 410  # the agency retires the endpoint
    second = (await stack.share(agency["agency_id"], pupil, "profile")).json()
    dead = await eventually(lambda: status_of(stack, second["delivery_id"], "failed"))
    assert dead.attempts == 1 and dead.last_status_code == 410  # no retry after 410
    gone = await _agency(stack, agency["agency_id"])
    assert gone.disabled_reason == "gone" and gone.disabled_at is not None
    count = len(hooks.received)

    # Nothing further is sent to it: a new share is dead-lettered untried ...
    third = (await stack.share(agency["agency_id"], pupil)).json()
    parked = await eventually(lambda: status_of(stack, third["delivery_id"], "failed"))
    assert parked.attempts == 0 and parked.last_error == "endpoint_disabled"
    # ... and the deletion notice owed on withdrawal is kept, listed for the DPO, never dropped.
    await stack.withdraw(pupil)

    async def listed() -> list[dict[str, Any]] | None:
        response = await stack.client.get("/sharing/undeliverable", headers=dpo(stack))
        assert response.status_code == 200, response.text
        return response.json()["items"] or None

    (notice,) = await eventually(listed, timeout=60)
    assert notice["agency_id"] == agency["agency_id"] and notice["status"] == "undeliverable"
    assert notice["pupil_id"] == str(pupil) and notice["share_ids"] == [first["share_id"]]
    assert notice["endpoint_disabled_reason"] == "gone" and notice["reason"] == "consent_withdrawn"
    assert len(hooks.received) == count
    # A SENCo cannot see the list or replay.
    assert (await stack.client.get("/sharing/undeliverable", headers=stack.staff())).status_code == 403
    replay = f"/sharing/deliveries/{notice['delivery_id']}/replay"
    assert (await stack.client.post(replay, headers=stack.staff())).status_code == 403


async def test_an_endpoint_failing_past_the_limit_is_disabled(hearing: tuple[Stack, ConsentLine], hooks: Hooks,
                                                              stack_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    stack, _ = hearing
    (pupil,) = await stack.consent.enrol()
    await stack.grant(pupil)
    agency = await stack.agency(hooks.url)
    hooks.status = lambda body: 503
    share = (await stack.share(agency["agency_id"], pupil)).json()
    dead = await eventually(lambda: status_of(stack, share["delivery_id"], "failed"), timeout=30)
    disabled = await _agency(stack, agency["agency_id"])
    assert disabled.disabled_reason == "failing"
    assert (disabled.disabled_at - disabled.failing_since).total_seconds() >= QUICK.disable_after_failing_s
    assert dead.attempts < QUICK.tries  # disabled before the schedule ran out
    # The DPO replays the dead letter once the endpoint is back: it stays parked while disabled.
    replay = await stack.client.post(f"/sharing/deliveries/{share['delivery_id']}/replay", headers=dpo(stack))
    assert replay.status_code == 200, replay.text
    again = await eventually(lambda: status_of(stack, share["delivery_id"], "failed"))
    assert again.last_error == "endpoint_disabled"

    # The CLI lists the trust's dead letters and replays an agency's.
    monkeypatch.setenv("DATABASE_URL", stack_settings.database_url)
    trust = str(stack.consent.trust_id)
    listed = await asyncio.to_thread(CliRunner().invoke, cli, ["reporting", "sharing", "dead-letters", "--trust", trust])
    assert listed.exit_code == 0, listed.output
    assert share["delivery_id"] in listed.output and "1 to replay" in listed.output
    replayed = await asyncio.to_thread(CliRunner().invoke, cli, ["reporting", "sharing", "replay", "--trust", trust,
                                                                 "--agency", agency["agency_id"]])
    assert replayed.exit_code == 0, replayed.output
    assert f"replaying {share['delivery_id']}" in replayed.output
    bad = await asyncio.to_thread(CliRunner().invoke, cli, ["reporting", "sharing", "replay", "--trust", trust,
                                                            str(uuid.uuid4())])
    assert bad.exit_code == 1 and "0 replayed" in bad.output
    assert len(hooks.received) == dead.attempts  # nothing after the endpoint was disabled


async def _tried(stack: Stack, delivery_id: str) -> list[Any] | None:
    return await _attempts(stack, delivery_id) or None


async def _attempts(stack: Stack, delivery_id: str) -> list[Any]:
    async with stack.engine.connect() as conn:
        return list((await conn.execute(select(attempts).where(attempts.c.delivery_id == uuid.UUID(delivery_id))
                                        .order_by(attempts.c.attempt))).all())


async def _agency(stack: Stack, agency_id: str) -> Any:
    async with stack.engine.connect() as conn:
        return (await conn.execute(select(agencies).where(agencies.c.agency_id == uuid.UUID(agency_id)))).first()


__all__ = ["deliveries"]


async def test_consent_expiry_sends_a_deletion_notice_once(hearing: tuple[Stack, ConsentLine], hooks: Hooks) -> None:
    stack, _ = hearing
    (pupil,) = await stack.consent.enrol()
    agency = await stack.agency(hooks.url)
    valid_until = datetime.now(UTC) + timedelta(seconds=8)
    response = await stack.consent.client.post(f"/pupils/{pupil}/consents", headers=stack.consent.senco,
                                               json=stack.consent.consent_body(valid_until=valid_until.isoformat()))
    assert response.status_code in (200, 201), response.text
    share = (await stack.share(agency["agency_id"], pupil)).json()
    assert share["status"] == "accepted", share
    await eventually(lambda: status_of(stack, share["delivery_id"], "delivered"))

    async def notice() -> dict[str, Any] | None:
        found = hooks.of_type("share.deletion_requested")
        return found[0] if found else None

    request = await eventually(notice, timeout=30)
    sent = Webhook(agency["signing_secret"]).verify(request["body"], request["headers"])
    assert sent["data"]["reason"] == "consent_expired" and sent["data"]["share_ids"] == [share["share_id"]]
    assert sent["data"]["pupil_id"] == str(pupil) and sent["data"]["trust_id"] == str(stack.consent.trust_id)
    await asyncio.sleep(1.0)  # further passes send nothing more
    assert len(hooks.of_type("share.deletion_requested")) == 1
    # A share asked now is blocked: the consent has expired.
    assert (await stack.share(agency["agency_id"], pupil)).json()["status"] == "blocked"
