"""Webhook deliveries per second to a local receiver (a process of its own).

* ``sharing.webhook.deliveries``: the sending step alone (Standard Webhooks signing, the worker's
  httpx client, batches of `batch_size` sent concurrently) beside a raw unsigned POST loop.
* ``sharing.deliveries.worker``: the real delivery worker (`Sharing.deliver_due`, over a migrated
  reporting schema in PostgreSQL): claim due rows FOR UPDATE SKIP LOCKED, check the endpoint, ask
  consent again over HTTP (one GET /sharing-decisions per distinct pupil of the batch: every
  delivery here is a different pupil, the worst case), sign, POST, record the outcome, the
  ShareDelivered event and the delivery log; beside a raw POST loop with the same HTTP client at
  the same concurrency (`batch_size`). Goal: at least 50 % of the raw loop. The consent answers
  come from a stand-in in the receiver's process (the consent service's own latency is
  bench/consent.py's figure); the service token is a fixed string."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import orjson
from sqlalchemy import func, insert, select

from bench.common import HIGHER_IS_BETTER, BenchKeyring, Figure
from services.reporting.sharing import ConsentClient, Sharing, SharingSettings, webhook_client
from services.reporting.sharing.documents import DOCUMENT_FIELD
from services.reporting.sharing.signing import headers, new_secret
from services.reporting.sharing.tables import deliveries, shares
from shared.auth import Principal, Role
from shared.datakeys import KekKeyring, LocalKek
from shared.settings import Settings

DELIVERIES = 3000
WORKER_DELIVERIES = 3000
ACADEMY = uuid.UUID("00000000-0000-4000-8000-0000000000a1")


async def _receiver(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/sharing-decisions":  # the consent service's answer, as it words it
        from urllib.parse import parse_qs

        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = orjson.dumps({"allow": True, "decision": "allow", "reason": "consent_granted", "academy_id": str(ACADEMY),
                             "pupil_id": query["pupil_id"], "agency_category": query["agency_category"],
                             "lawful_basis": "consent", "consent_obtained": True,
                             "record": {"stream_id": f"consent-{query['pupil_id']}-share_camhs", "version": 1,
                                        "decision_id": str(uuid.uuid4())}})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def run(scale: float = 1.0) -> list[dict]:  # type: ignore[type-arg]
    global DELIVERIES, WORKER_DELIVERIES  # --scale shrinks both counts for this run
    DELIVERIES = WORKER_DELIVERIES = max(100, int(3000 * scale))
    # The receiver runs in a process of its own, as an agency's server would.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}/hooks"
    # Popen returns once the process is spawned; nothing else runs on the loop yet.
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.reporting_sharing:_receiver", "--port", str(port),  # noqa: ASYNC220
                               "--log-level", "warning", "--no-access-log", "--lifespan", "off",
                               # Keep-alive longer than any pause between batches: a connection the
                               # server closes as the client reuses it is a ReadError, not a figure.
                               "--timeout-keep-alive", "120"])
    async with httpx.AsyncClient() as probe:
        for _ in range(200):
            try:
                await probe.post(url, content=b"{}")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    config = SharingSettings(allowed_private_networks=["127.0.0.1/32"])  # loopback is refused unless listed
    client = webhook_client(config)  # the client the delivery worker sends with
    secret = new_secret()
    payload = {"share_id": str(uuid.uuid4()), "pupil_id": str(uuid.uuid4()), "document_kind": "report",
               "document": {"title": "Termly report", "strand": "Being", "needs": [52, 28, 28]}}
    batch = config.batch_size
    try:

        async def signed(n: int) -> None:
            body = orjson.dumps({"type": "share.created", "timestamp": time.time(), "data": payload})
            response = await client.post(url, content=body, headers=headers(secret, str(uuid.uuid4()), int(time.time()), body))
            assert response.status_code == 204

        t0 = time.perf_counter()
        for start in range(0, DELIVERIES, batch):
            await asyncio.gather(*(signed(n) for n in range(start, min(start + batch, DELIVERIES))))
        ours = DELIVERIES / (time.perf_counter() - t0)

        async with httpx.AsyncClient() as raw_client:
            body = orjson.dumps({"type": "share.created", "data": payload})

            async def raw(n: int) -> None:
                await raw_client.post(url, content=body)

            t0 = time.perf_counter()
            for start in range(0, DELIVERIES, batch):
                await asyncio.gather(*(raw(n) for n in range(start, min(start + batch, DELIVERIES))))
            baseline = DELIVERIES / (time.perf_counter() - t0)
        worker, raw_same = await _worker_figure(port)
    finally:
        await client.aclose()
        server.terminate()
        server.wait(timeout=10)
    figures = [Figure("sharing.webhook.deliveries", ours, "deliveries/s", "httpx.post.unsigned", baseline, HIGHER_IS_BETTER),
               Figure("sharing.deliveries.worker", worker, "deliveries/s",
                      "raw POST loop, same httpx client and concurrency", raw_same, HIGHER_IS_BETTER)]
    return [json.loads(f.json_line()) for f in figures]


class _AskOverHttp(ConsentClient):
    """The worker's consent client, asking the stand-in; a fixed service token."""

    def __init__(self, base_url: str) -> None:
        self.tokens = _Token()  # type: ignore[assignment]
        self.http = httpx.AsyncClient(base_url=base_url, timeout=5.0)


class _Token:
    async def for_trust(self, trust_id: uuid.UUID) -> str:
        return "bench"


async def _worker_figure(port: int) -> tuple[float, float]:
    from bench.common import TRUST, own_database, own_state, unique
    from flourish.local.stack import ensure_stack

    endpoints = ensure_stack()
    async with own_database(endpoints.database_url, "sharing") as url:
        settings = own_state(Settings(database_url=url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
                                      topic_prefix=unique("bench.") + ".", log_level="WARNING"), "sharing")
        return await _worker_run(settings, port, TRUST)


async def _worker_run(settings: Settings, port: int, trust: uuid.UUID) -> tuple[float, float]:
    from shared.store.db import create_engine

    engine = create_engine(settings)
    base = f"http://127.0.0.1:{port}"
    config = SharingSettings(allowed_private_networks=["127.0.0.1/32"])
    kek = KekKeyring(LocalKek(os.urandom(32)))
    keys = BenchKeyring()  # the pupils' keys, as a service's cache holds them (the fetch is left out)
    sharing = Sharing(config, _AskOverHttp(base), lambda: kek, webhook_client(config), keyring=keys)
    runtime = SimpleNamespace(engine=engine, settings=settings)
    principal = Principal("bench-dpo", frozenset({Role.dpo}), trust)
    try:
        async with engine.begin() as conn:
            agency = await sharing.register_agency(conn, runtime, principal, "camhs", "Bench CAMHS", f"{base}/hooks")
        verified = await sharing.verify_agency(runtime, principal, agency["agency_id"])  # the receiver answers 204
        assert verified.get("verified"), verified
        at = datetime.now(UTC)
        rows, frozen = [], []
        document = {"kind": "report", "strand": "being", "needs": [52, 28, 28]}
        for _ in range(WORKER_DELIVERIES):
            pupil, share = uuid.uuid4(), uuid.uuid4()
            # Each share's document frozen at share time, sealed with its pupil's key, as share() does.
            frozen.append(dict(
                share_id=share, trust_id=trust, academy_id=ACADEMY, pupil_id=pupil, agency_id=agency["agency_id"],
                document_kind="report", status="accepted", reason="consent_granted", decision={}, shared_by="bench",
                shared_at=at, document_sealed=(await keys.key_for(trust, pupil)).seal_json(document, DOCUMENT_FIELD)))
            rows.append(dict(
                delivery_id=uuid.uuid4(), trust_id=trust, academy_id=ACADEMY, pupil_id=pupil,
                agency_id=agency["agency_id"], agency_category="camhs", share_id=share, kind="share",
                document_kind="report", event_type="share.created", status="pending", next_attempt_at=at, created_at=at,
                payload={"share_id": str(share), "pupil_id": str(pupil), "academy_id": str(ACADEMY),
                         "agency_category": "camhs", "document_kind": "report", "document_id": None,
                         "lawful_basis": "consent", "shared_at": at.isoformat()}))
        async with engine.begin() as conn:
            await conn.execute(insert(shares), frozen)
            await conn.execute(insert(deliveries), rows)
        t0 = time.perf_counter()
        while await sharing.deliver_due(runtime):
            pass
        worker = WORKER_DELIVERIES / (time.perf_counter() - t0)
        async with engine.connect() as conn:
            delivered = (await conn.execute(select(func.count()).select_from(deliveries)
                                            .where(deliveries.c.status == "delivered"))).scalar_one()
        assert delivered == WORKER_DELIVERIES, delivered

        body = orjson.dumps({"type": "share.created", "data": {  # the same body the worker sends
            **rows[0]["payload"], "document": document, "trust_id": str(trust), "academy_id": str(ACADEMY)}})

        async def raw(n: int) -> None:
            response = await sharing.http.post(f"{base}/hooks", content=body)
            assert response.status_code == 204

        t0 = time.perf_counter()
        for start in range(0, WORKER_DELIVERIES, config.batch_size):
            await asyncio.gather(*(raw(n) for n in range(start, min(start + config.batch_size, WORKER_DELIVERIES))))
        baseline = WORKER_DELIVERIES / (time.perf_counter() - t0)
    finally:
        await sharing.close()
        await engine.dispose()
    return worker, baseline


if __name__ == "__main__":
    for line in asyncio.run(run()):
        print(json.dumps(line))
