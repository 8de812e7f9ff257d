"""The consent service's figures: the sharing decision API's latency, and envelope encryption of
a typical event payload with a pupil's data key.

* ``consent.decision.p50`` / ``.p99``: GET /sharing-decisions, one request at a time, through the
  whole service (uvicorn on loopback, bearer-token check, one indexed read, JSON), on the consent
  service started for real (migrations, Kafka, relay). Baseline ``asyncpg.decision_query``: the
  same read on a raw asyncpg connection (the floor under any implementation). Goal: p99 <= 5 ms.
* ``datakeys.seal_open``: serialise, encrypt (AES-256-GCM, fresh nonce, associated data), decrypt
  and parse a typical event payload, per second. Baseline ``orjson.dumps_loads``: the same payload
  serialised and parsed without encryption.

Run from ``python -m bench`` (wired there) or alone: ``python -m bench.consent``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import uvicorn

from bench.common import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    Figure,
    asyncpg_dsn,
    info,
    observation,
    own_database,
    percentile,
    unique,
)
from shared.auth import DevIssuer, Role
from shared.datakeys import new_data_key
from shared.events.assessment import PupilEnrolled
from shared.events.envelope import Envelope
from shared.settings import Settings

PUPILS = 200
REQUESTS = 3000
WARMUP = 300
SEAL_SECONDS = 2.0


async def run(scale: float = 1.0) -> list[dict[str, Any]]:
    from flourish.local.stack import ensure_stack

    endpoints = ensure_stack()
    # A database of its own: the live database's consent schema has an outbox the live relay
    # publishes (issue 18 found ~300 bench events on flourish.consent that way).
    async with own_database(endpoints.database_url, "consent") as database_url:
        settings = Settings(database_url=database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers)
        figures = [*await decision_latency(settings, requests=max(200, int(REQUESTS * scale))),
                   seal_open(SEAL_SECONDS * min(1.0, max(scale, 0.1)))]
    return [json.loads(figure.json_line()) for figure in figures]


async def decision_latency(settings: Settings, requests: int = REQUESTS) -> list[Figure]:
    from services.consent.app import ConsentServiceSettings, ConsentSettings
    from services.consent.app import app as consent_service
    from services.consent.projections import on_pupil_enrolled

    prefix = unique("bench.") + "."
    import tempfile
    from pathlib import Path

    state_dir = Path(tempfile.mkdtemp(prefix="flourish-bench-consent-"))
    settings = settings.model_copy(update={"topic_prefix": prefix, "state_dir": state_dir,
                                           "jwks_path": state_dir / "dev-issuer" / "jwks.json", "log_level": "WARNING"})
    from flourish.kafka_acls import provision

    await provision(settings)  # the prefix's topics and the services' ACLs, as Kafka's admin
    app = consent_service(ConsentServiceSettings(kernel=settings, consent=ConsentSettings(run_retention_scheduler=False)))
    trust, academy = uuid.uuid4(), uuid.uuid4()
    issuer = DevIssuer(settings)
    service = {"Authorization": f"Bearer {issuer.issue('service:reporting', [Role.service], trust, client='reporting')}"}
    senco = {"Authorization": f"Bearer {issuer.issue('senco-1', [Role.senco], trust, [academy])}"}
    ids = [uuid.uuid4() for _ in range(PUPILS)]

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        engine = app.state.runtime.engine
        async with engine.begin() as conn:
            for pupil in ids:
                enrolled = Envelope(data=PupilEnrolled(pupil_id=pupil, enrolled_on=date(2025, 9, 3)),
                                    trust_id=trust, academy_id=academy, source="/flourish/bench")
                await on_pupil_enrolled(conn, enrolled)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for pupil in ids[: PUPILS // 2]:
                response = await client.post(f"/pupils/{pupil}/consents", headers=senco, json={
                    "purpose": "share_camhs", "decision": "granted", "method": "paper",
                    "given_by": {"name": "Bench Parent", "relationship": "mother"},
                    "decided_at": datetime.now(UTC).isoformat()})
                response.raise_for_status()
        # Let the relay publish the grants first: the figure is the decision, not a concurrent relay.
        await app.state.runtime.relay.drain()
        info(f"consent.decision: {PUPILS} pupils, {PUPILS // 2} with consent; {requests} sequential "
             f"GET /sharing-decisions over loopback (+{WARMUP} warm-up)")
        # A lean keep-alive HTTP/1.1 client, so the figure is the service's time, not a client
        # library's (httpx on the same event loop adds about half a millisecond per request).
        raw_client = await RawHttp.connect("127.0.0.1", port)
        ours = []
        try:
            for i in range(WARMUP + requests):
                path = f"/sharing-decisions?pupil_id={ids[i % PUPILS]}&agency_category=camhs&data_kind=report"
                t0 = time.perf_counter()
                status, _body = await raw_client.get(path, service)
                elapsed = (time.perf_counter() - t0) * 1000
                if status != 200:
                    raise RuntimeError(f"the decision API answered {status}")
                if i >= WARMUP:
                    ours.append(elapsed)
        finally:
            raw_client.close()
        info(f"consent.decision: p50 {percentile(ours, 50):.2f} ms, p90 {percentile(ours, 90):.2f} ms, "
             f"p99 {percentile(ours, 99):.2f} ms, max {max(ours):.2f} ms")

        raw = await _raw_query_latency(settings, ids, requests)
        info(f"asyncpg.decision_query: p50 {percentile(raw, 50):.3f} ms, p99 {percentile(raw, 99):.3f} ms")

        # Leave nothing readable behind: erase the bench pupils the way a DPO would.
        dpo = {"Authorization": f"Bearer {issuer.issue('dpo-bench', [Role.dpo], trust)}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for pupil in ids:
                (await client.post(f"/pupils/{pupil}/erasure", headers=dpo)).raise_for_status()
    finally:
        server.should_exit = True
        await serving
        from flourish.kafka_acls import deprovision

        await deprovision(settings, prefix)  # the prefix's topics and ACLs
    return [
        Figure(f"consent.decision.p{p}", percentile(ours, p), "ms", f"asyncpg.decision_query.p{p}",
               percentile(raw, p), LOWER_IS_BETTER)
        for p in (50, 99)
    ]


class RawHttp:
    """GET over one kept-alive connection, reading exactly Content-Length bytes of body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawHttp:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        lines = [f"GET {path} HTTP/1.1", "Host: consent"] + [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _free_port() -> int:
    # Uvicorn binds host/port itself (sockets handed to it in-process answered with a delayed-ACK
    # stall of ~40 ms per request, which would measure the harness rather than the service).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # type: ignore[no-any-return]


async def _raw_query_latency(settings: Settings, ids: list[uuid.UUID], requests: int = REQUESTS) -> list[float]:
    conn = await asyncpg.connect(asyncpg_dsn(settings))
    try:
        statement = await conn.prepare(
            "SELECT p.trust_id, p.academy_id, p.erased_at, r.* FROM consent.pupils p "
            "LEFT JOIN consent.consent_records r ON r.pupil_id = p.pupil_id AND r.purpose = $2 "
            "WHERE p.pupil_id = $1"
        )
        latencies = []
        for i in range(WARMUP + requests):
            t0 = time.perf_counter()
            await statement.fetchrow(ids[i % len(ids)], "share_camhs")
            if i >= WARMUP:
                latencies.append((time.perf_counter() - t0) * 1000)
        return latencies
    finally:
        await conn.close()


def seal_open(seconds: float = SEAL_SECONDS) -> Figure:
    key = new_data_key(uuid.uuid4(), uuid.uuid4())
    payload = observation(key.pupil_id).data.model_dump(mode="json")
    size = len(orjson.dumps(payload))

    def rate(work: Any) -> float:
        for _ in range(1000):
            work()
        count, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for _ in range(500):
                work()
            count += 500
        return count / elapsed

    def sealed() -> None:
        key.open_json(key.seal_json(payload, "bench.payload"), "bench.payload")

    def plain() -> None:
        orjson.loads(orjson.dumps(payload))

    ours, raw = rate(sealed), rate(plain)
    info(f"datakeys.seal_open: {size} B JSON payload: sealed+opened {ours:,.0f}/s; plain dumps+loads {raw:,.0f}/s; "
         f"sealed size {len(key.seal_json(payload, 'bench.payload'))} B")
    return Figure("datakeys.seal_open", ours, "payloads/s", "orjson.dumps_loads", raw, HIGHER_IS_BETTER)


if __name__ == "__main__":
    import logging
    import sys

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    lines = asyncio.run(run())  # the services' loop (uvicorn --loop asyncio)
    for line in lines:
        print(json.dumps(line))
