"""``assessment.observation.single``: one ``POST /observations`` at a time per client, N clients.

Ours: the assessment service (its whole app: bearer token, tenancy, Idempotency-Key, consent-era
sealing of the event under the pupil's key, the append, the relay publishing to Kafka) under
uvicorn on a loopback port in this process, on the asyncio loop. Baseline
``fastapi.asyncpg.insert``: a minimal FastAPI app that validates the same JSON body with the same
pydantic model (``ObservationIn``) and inserts one row with an asyncpg pool, served the same way.
Both are driven by the same client (``bench.http_client``: httpx, keep-alive, CONCURRENCY requests
in flight, a fresh Idempotency-Key per request) in a process of its own, so the server's CPU time
(psutil, this process, over the timed run only) is the server's alone.

Details on stderr and in the figure's JSON: CPU ms per observation of the service process and of
the baseline's, and the SQL statements per observation (pg_stat_statements is not loaded on the
local server, so a SQLAlchemy ``before_cursor_execute`` listener counts them: those run while a
request is being served, and apart from them those of the relay and other background work).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psutil
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import event

from bench.common import HIGHER_IS_BETTER, Figure, info
from services.assessment.framework_store import SAMPLE_VERSION
from services.assessment.schemas import ObservationIn
from shared.auth import DevIssuer, Role
from shared.settings import Settings

CONCURRENCY = 8
REQUESTS = 2000
WARMUP = 200
NAME = "assessment.observation.single"
_IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar("bench_in_request", default=False)


def _free_port() -> int:
    # uvicorn binds host/port itself: sockets handed to it in-process stall ~40 ms on delayed ACKs
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # type: ignore[no-any-return]


@asynccontextmanager
async def serve(asgi: Any) -> AsyncIterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                           access_log=False, loop="asyncio"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers a flag, not an event
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def marking(app: Any) -> Any:
    """The app, with the statements run while serving a request told apart from the relay's."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        token = _IN_REQUEST.set(True)
        try:
            await app(scope, receive, send)
        finally:
            _IN_REQUEST.reset(token)

    return asgi


async def drive(url: str, headers: dict[str, str], bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the client process over the bodies; its JSON line."""
    spec = json.dumps({"url": url, "path": "/observations", "headers": headers, "bodies": bodies,
                       "concurrency": CONCURRENCY, "idempotency_keys": True}).encode()
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.http_client", stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate(spec)
    if child.returncode:
        raise RuntimeError(f"the client failed ({child.returncode})")
    return json.loads(out)  # type: ignore[no-any-return]


async def timed(url: str, headers: dict[str, str], warm: list[dict[str, Any]], bodies: list[dict[str, Any]],
                what: str, on_start: Any = None) -> tuple[dict[str, Any], float]:
    """Warm-up run, then the timed run; (its result, CPU ms per request of this process)."""
    await drive(url, headers, warm)
    if on_start is not None:
        on_start()
    me = psutil.Process()
    before = me.cpu_times()
    result = await drive(url, headers, bodies)
    after = me.cpu_times()
    cpu_ms = ((after.user - before.user) + (after.system - before.system)) * 1000 / max(1, result["count"])
    created = result["statuses"].get("201", 0)
    info(f"{what}: {result['rate']:,.0f}/s ({CONCURRENCY} clients), p50 {result['p50_ms']:.1f} ms, "
         f"p99 {result['p99_ms']:.1f} ms, statuses {result['statuses']}, {cpu_ms:.2f} CPU ms/request")
    if created != len(bodies):
        raise RuntimeError(f"{what}: {created} of {len(bodies)} requests answered 201: {result['statuses']}")
    return result, cpu_ms


def bodies_for(pupils: list[str], count: int, offset: int = 0) -> list[dict[str, Any]]:
    moment = datetime.now(UTC) - timedelta(minutes=5)
    return [{"pupil_id": pupils[i % len(pupils)], "statement_id": f"being.{i % 45 + 1}",
             "level": ("rarely", "emerging", "developing", "secure")[i % 4],
             "observed_at": (moment - timedelta(milliseconds=offset + i)).isoformat(),
             "framework_version": SAMPLE_VERSION} for i in range(count)]


def baseline_app(dsn: str) -> tuple[FastAPI, Any]:
    """The minimal endpoint: same body model, one INSERT from an asyncpg pool."""
    state: dict[str, asyncpg.Pool] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
        await pool.execute("CREATE TABLE IF NOT EXISTS bench_single_observations "
                           "(observation_id uuid PRIMARY KEY, pupil_id uuid NOT NULL, body jsonb NOT NULL)")
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/observations", status_code=201)
    async def record(body: ObservationIn) -> JSONResponse:
        observation_id = body.observation_id or uuid.uuid4()
        await state["pool"].execute("INSERT INTO bench_single_observations VALUES ($1, $2, $3)",
                                    observation_id, body.pupil_id, body.model_dump_json())
        return JSONResponse({"recorded": 1, "observation_ids": [str(observation_id)]}, status_code=201)

    return app, lifespan


async def single_observations(settings: Settings, served: Any, roster: Any, scale: float = 1.0) -> list[dict[str, Any]]:
    """The figure and its baseline, from the same run (`served`, `roster`: bench.assessment's)."""
    requests = max(200, int(REQUESTS * scale))
    warmup = max(50, int(WARMUP * scale))
    trust, academy = uuid.uuid4(), uuid.uuid4()
    issuer = DevIssuer(settings)
    staff = {"Authorization": f"Bearer {issuer.issue('bench-staff', [Role.senco], trust, [academy])}"}
    admin = {"Authorization": f"Bearer {issuer.issue('bench-admin', [Role.trust_admin], trust)}"}
    counts: Counter[str] = Counter()
    texts: Counter[str] = Counter()

    async with served(settings) as (app, _url):
        engine = app.state.runtime.engine

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            where = "request" if _IN_REQUEST.get() else "background"
            counts[where] += 1
            if where == "request":
                texts[" ".join(statement.split())[:70]] += 1

        async with serve(marking(app)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as setup:
                classes = await roster(setup, academy, staff, admin)
            pupils = [p for c in classes for p in c]
            warm, timed_bodies = bodies_for(pupils, warmup), bodies_for(pupils, requests, offset=warmup)
            await drive(url, staff, warm)
            try:
                ours, ours_cpu = await timed(url, staff, bodies_for(pupils, warmup, offset=10 * requests),
                                             timed_bodies, NAME,
                                             lambda: event.listen(engine.sync_engine, "before_cursor_execute", count))
            finally:
                if event.contains(engine.sync_engine, "before_cursor_execute", count):
                    event.remove(engine.sync_engine, "before_cursor_execute", count)
    per_request = counts["request"] / requests
    info(f"{NAME}: {per_request:.1f} SQL statements per observation while serving it "
         f"(+{counts['background'] / requests:.1f} in the background: relay, pollers); the commonest: "
         + "; ".join(f"{n / requests:.1f}x {t}" for t, n in texts.most_common(8)))

    app_b, lifespan = baseline_app(settings.sync_database_url)
    async with lifespan(app_b), serve(app_b) as url:
        raw, raw_cpu = await timed(url, staff, bodies_for(pupils, warmup), bodies_for(pupils, requests, offset=1),
                                   "fastapi.asyncpg.insert")
    details = {"concurrency": CONCURRENCY, "requests": requests, "p99_ms": round(ours["p99_ms"], 1),
               "baseline_p99_ms": round(raw["p99_ms"], 1), "cpu_ms_per_observation": round(ours_cpu, 2),
               "baseline_cpu_ms_per_observation": round(raw_cpu, 2),
               "statements_per_observation": round(per_request, 1),
               "background_statements_per_observation": round(counts["background"] / requests, 1),
               "goal_ratio": 0.5, "started": time.strftime("%H:%M:%S")}
    figure = Figure(NAME, ours["rate"], "observations/s", "fastapi.asyncpg.insert", raw["rate"], HIGHER_IS_BETTER)
    return [{**json.loads(figure.json_line()), **details}]
