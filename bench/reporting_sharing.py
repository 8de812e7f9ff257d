"""Webhook deliveries per second to a local receiver: the delivery worker's sending step (Standard
Webhooks signing, its httpx client, batches of `batch_size` sent concurrently) beside a raw httpx
POST loop of the same bodies to the same receiver. Goal: at least 1,000 deliveries/s.

What it leaves out: the claim/record statements in PostgreSQL and the consent re-check per
(pupil, category, kind), which the integration tests cover (tests/integration/reporting/sharing)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid

import httpx
import orjson

from bench.common import HIGHER_IS_BETTER, Figure
from services.reporting.sharing import SharingSettings, webhook_client
from services.reporting.sharing.signing import headers, new_secret

DELIVERIES = 3000


async def _receiver(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def run() -> list[dict]:  # type: ignore[type-arg]
    # The receiver runs in a process of its own, as an agency's server would.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}/hooks"
    # Popen returns once the process is spawned; nothing else runs on the loop yet.
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.reporting_sharing:_receiver", "--port", str(port),  # noqa: ASYNC220
                               "--log-level", "warning", "--no-access-log", "--lifespan", "off"])
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
    finally:
        await client.aclose()
        server.terminate()
        server.wait(timeout=10)
    figure = Figure("sharing.webhook.deliveries", ours, "deliveries/s", "httpx.post.unsigned", baseline, HIGHER_IS_BETTER)
    return [json.loads(figure.json_line())]


if __name__ == "__main__":
    for line in asyncio.run(run()):
        print(json.dumps(line))
