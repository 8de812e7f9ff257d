"""Steady traffic through the public APIs, retried the way a real client retries, and the moment
each effect shows up in the reporting read model.

    python -m bench --only load        (or `await bench.load.run()`)

`Load` drives the assessment service over HTTP: single observations at a target rate, each with an
Idempotency-Key, and now and then a whole individual assessment (start, rate its 45 statements in
one bulk request, complete). A command whose answer is a connection error, a timeout or a 5xx is
sent again with the same key until it gets a final answer; every command and its fate is kept.
`Watcher` polls the reporting read model (`reporting.rm_observations`, `rm_assessments`) for the
accepted commands' effects; `reconcile` counts, per accepted command, its events in the assessment
event store and its rows in the read model. The reliability test (tests/reliability) and the `load`
benchmark both run on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.common import LOWER_IS_BETTER, Figure, info, paced, percentile, unique
from bench.pipeline import make_envelopes, raw_clients, wire_messages
from shared.auth import DevIssuer, Role
from shared.messaging.clients import ADMIN, kafka_options
from shared.settings import Settings

FRAMEWORK = "flourish-sample-1"
STATEMENTS = [f"being.{n}" for n in range(1, 46)]  # the sample framework's Being strand
LEVELS = ("rarely", "emerging", "developing", "secure")
RETRIED_STATUSES = {429, 500, 502, 503, 504}
OBSERVE, START, RATE, COMPLETE = "observe", "start", "rate", "complete"
BENCH_PORTS = {"assessment": 18401, "planning": 18402, "consent": 18403, "reporting": 18404}


@dataclass
class Command:
    """One request as the client meant it, and what became of it."""

    kind: str  # OBSERVE, START, RATE or COMPLETE
    path: str
    body: dict[str, Any] | None
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    sent_at: float = 0.0  # time.monotonic() of the first attempt
    attempts: int = 0
    status: int | None = None  # the final answer's status; None while unanswered
    answered_at: float | None = None
    response: Any = None
    visible_at: float | None = None  # its effect seen in the reporting read model
    assessment_id: str | None = None  # START, RATE, COMPLETE

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def latency_s(self) -> float | None:
        """Accepted → visible in the read model."""
        if self.visible_at is None or self.answered_at is None:
            return None
        return self.visible_at - self.answered_at

    @property
    def observation_key(self) -> tuple[str, datetime]:
        assert self.body is not None
        return self.body["pupil_id"], datetime.fromisoformat(self.body["observed_at"])


@dataclass(frozen=True)
class Tenant:
    trust_id: uuid.UUID
    academy_id: uuid.UUID
    pupil_ids: list[str]
    headers: dict[str, str]


async def setup_tenant(client: httpx.AsyncClient, issuer: DevIssuer, pupils: int) -> Tenant:
    """A trust and academy of the run's own with one class of pupils, through the public API."""
    trust, academy = uuid.uuid4(), uuid.uuid4()

    def headers(role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {issuer.issue('staff-load', [role], trust, [academy], ttl=timedelta(hours=4))}"}

    response = await client.put(f"/academies/{academy}", json={"name": "Load Test Primary"}, headers=headers(Role.trust_admin))
    response.raise_for_status()
    rows = [f"A{n:012d},Surname{n},Forename{n},{date(2017, 4, 3):%d/%m/%Y},{'MF'[n % 2]},4,4B" for n in range(pupils)]
    csv = "\r\n".join(["UPN,Legal Surname,Legal Forename,DOB,Gender,Year,Reg Group", *rows]) + "\r\n"
    response = await client.post(f"/academies/{academy}/roster-imports", content=csv.encode(),
                                 headers={**headers(Role.senco), "Content-Type": "text/csv"}, timeout=120)
    response.raise_for_status()
    pupil_ids = [p["pupil_id"] for p in response.json()["enrolled"]]
    return Tenant(trust, academy, pupil_ids, headers(Role.senco))


class Load:
    """Open-loop traffic: a new observation every 1/rate seconds whatever earlier ones are doing
    (a slow or retrying request does not slow the rate, so trouble shows as latency), and an
    assessment every `assessment_every_s` seconds."""

    def __init__(self, client: httpx.AsyncClient, tenant: Tenant, *, watcher: Watcher | None = None,
                 retry_for_s: float = 180.0, assessment_every_s: float = 5.0, seed: int = 7) -> None:
        self.client = client
        self.tenant = tenant
        self.watcher = watcher  # told of every accepted command, to time its effect
        self.retry_for_s = retry_for_s
        self.assessment_every_s = assessment_every_s
        self.commands: list[Command] = []
        self.achieved_per_s = 0.0
        self._random = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._used: set[tuple[str, datetime]] = set()
        self._stop = asyncio.Event()

    # --- driving -----------------------------------------------------------------------------

    async def run(self, rate_per_s: float, seconds: float | None = None) -> None:
        """Send until `stop()` (or for `seconds`), then wait for every command's final answer."""
        self._stop.clear()
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_assessment = started + self.assessment_every_s
        for i in itertools.count():
            due = started + i / rate_per_s
            if seconds is not None and due - started >= seconds:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
            if self._stop.is_set():
                break
            self._spawn(self.send(self._observation()))
            if self.assessment_every_s and loop.time() >= next_assessment:
                next_assessment += self.assessment_every_s
                self._spawn(self.assessment())
        sent = len(self.of_kind(OBSERVE))
        # What the client really sent: below the target when this process could not keep up.
        self.achieved_per_s = sent / (loop.time() - started) if sent else 0.0
        await self.settle()

    def stop(self) -> None:
        self._stop.set()

    async def settle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _observation(self) -> Command:
        pupil = self._random.choice(self.tenant.pupil_ids)
        observed_at = datetime.now(UTC) - timedelta(seconds=1)
        while (pupil, observed_at) in self._used:  # each command's effect is found by (pupil, moment)
            observed_at += timedelta(microseconds=1)
        self._used.add((pupil, observed_at))
        body = {"pupil_id": pupil, "statement_id": self._random.choice(STATEMENTS), "level": self._random.choice(LEVELS),
                "observed_at": observed_at.isoformat(), "framework_version": FRAMEWORK}
        return Command(OBSERVE, "/observations", body)

    async def assessment(self) -> None:
        """Start, rate every statement, complete: each step once the one before was accepted."""
        pupil = self._random.choice(self.tenant.pupil_ids)
        start = await self.send(Command(START, "/assessments", {"strands": ["being"], "framework_version": FRAMEWORK,
                                                                 "pupil_id": pupil}))
        if not start.accepted:
            return
        assessment_id = start.response["assessments"][0]["assessment_id"]
        start.assessment_id = assessment_id
        ratings = [{"pupil_id": pupil, "statement_id": s, "level": self._random.choice(LEVELS), "assessment_id": assessment_id}
                   for s in STATEMENTS]
        rate = await self.send(Command(RATE, "/observations/bulk", {"observed_at": datetime.now(UTC).isoformat(),
                                                                     "ratings": ratings}, assessment_id=assessment_id))
        if rate.accepted:
            await self.send(Command(COMPLETE, f"/assessments/{assessment_id}/complete", None, assessment_id=assessment_id))

    async def send(self, command: Command) -> Command:
        """Send until a final answer (2xx or a 4xx other than 429), the same key every time."""
        self.commands.append(command)
        command.sent_at = time.monotonic()
        deadline = command.sent_at + self.retry_for_s
        pause = 0.1
        headers = {**self.tenant.headers, "Idempotency-Key": command.key}
        while True:
            command.attempts += 1
            try:
                response = await self.client.post(command.path, json=command.body, headers=headers)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code not in RETRIED_STATUSES:
                command.status, command.answered_at = response.status_code, time.monotonic()
                command.response = response.json() if response.content else None
                if command.accepted and self.watcher is not None:
                    self.watcher.expect(command)
                return command
            if time.monotonic() + pause > deadline:
                return command  # unanswered: the client gave up
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    # --- figures -----------------------------------------------------------------------------

    def of_kind(self, *kinds: str) -> list[Command]:
        return [c for c in self.commands if c.kind in kinds]

    def latencies_s(self, kind: str = OBSERVE, since: float = 0.0) -> list[float]:
        return [c.latency_s for c in self.of_kind(kind) if c.sent_at >= since and c.latency_s is not None]

    def sent_between(self, start: float, end: float, kind: str = OBSERVE) -> list[Command]:
        return [c for c in self.of_kind(kind) if start <= c.sent_at < end]


class Watcher:
    """Polls the reporting read model for the effects of accepted commands (observations by their
    ids, completed assessments by theirs), on a connection of its own that survives restarts."""

    def __init__(self, dsn: str, interval_s: float = 0.05) -> None:
        self.dsn = dsn
        self.interval_s = interval_s
        self._observations: dict[str, list[Command]] = {}
        self._assessments: dict[str, Command] = {}
        self._task: asyncio.Task[None] | None = None

    def expect(self, command: Command) -> None:
        if command.kind == OBSERVE:
            for observation_id in command.response["observation_ids"]:
                self._observations.setdefault(observation_id, []).append(command)
        elif command.kind == COMPLETE and command.assessment_id:
            self._assessments[command.assessment_id] = command

    @property
    def pending(self) -> int:
        return len(self._observations) + len(self._assessments)

    async def __aenter__(self) -> Watcher:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def drained(self, timeout_s: float) -> bool:
        """Wait until every expected effect was seen (False if some were not within the timeout)."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:  # noqa: ASYNC110 - the poller sees effects land in the database
            await asyncio.sleep(0.2)
        return not self.pending

    async def _poll(self) -> None:
        conn: asyncpg.Connection | None = None
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.dsn, timeout=5)
                await self._check(conn)
            except Exception:  # noqa: BLE001 - a watcher must outlive whatever the server does
                # The server is restarting, the connection broke mid-query, or the read model is
                # not migrated yet: a new connection, and try again.
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(self.interval_s)

    async def _check(self, conn: asyncpg.Connection) -> None:
        for table, waiting, column in (("rm_observations", self._observations, "observation_id"),
                                       ("rm_assessments", self._assessments, "assessment_id")):
            if not waiting:
                continue
            ids = list(waiting)
            rows = await conn.fetch(f"SELECT {column}::text AS id FROM reporting.{table} WHERE {column} = ANY($1::uuid[])", ids)
            now = time.monotonic()
            for row in rows:
                found = waiting.pop(row["id"], None)
                for command in found if isinstance(found, list) else [found] if found else []:
                    command.visible_at = command.visible_at or now


# --- reconciliation --------------------------------------------------------------------------


@dataclass
class Reconciliation:
    """Every accepted command against its effects: events in the assessment event store and rows
    in the reporting read model."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0  # a final 4xx
    unanswered: int = 0  # the client gave up retrying
    effects: int = 0  # events of accepted commands in the event store
    lost: int = 0  # accepted commands (or their events) missing from the store or the read model
    duplicated: int = 0  # a command's effect more than once, or an effect no command explains
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"}

    def lose(self, count: int, what: str) -> None:
        if count:
            self.lost += count
            self.problems.append(f"lost {count}: {what}")

    def duplicate(self, count: int, what: str) -> None:
        if count:
            self.duplicated += count
            self.problems.append(f"duplicated {count}: {what}")


async def reconcile(dsn: str, trust_id: uuid.UUID, commands: Sequence[Command]) -> Reconciliation:
    conn = await asyncpg.connect(dsn)
    try:
        events = await conn.fetch(
            "SELECT split_part(event_type, '.', 3) AS kind, data->>'pupil_id' AS pupil_id,"
            " (data->>'observed_at')::timestamptz AS observed_at, data->>'assessment_id' AS assessment_id"
            " FROM assessment.events WHERE trust_id = $1 AND event_type LIKE 'flourish.assessment.%'", trust_id)
        observed = await conn.fetch(
            "SELECT pupil_id::text AS pupil_id, observed_at, assessment_id::text AS assessment_id"
            " FROM reporting.rm_observations WHERE trust_id = $1", trust_id)
        completed = await conn.fetch("SELECT assessment_id::text AS assessment_id FROM reporting.rm_assessments"
                                     " WHERE trust_id = $1", trust_id)
    finally:
        await conn.close()
    store = _Effects(events, [dict(r) | {"kind": "ObservationRecorded"} for r in observed])
    rm_completed = Counter(r["assessment_id"] for r in completed)
    result = Reconciliation(sent=len(commands), accepted=sum(c.accepted for c in commands),
                            rejected=sum(c.status is not None and not c.accepted for c in commands),
                            unanswered=sum(c.status is None for c in commands))
    settled = [c for c in commands if c.status is not None]  # an unanswered command may or may not have acted
    for command in settled:
        _reconcile_one(result, command, store, rm_completed)
    explained_obs = {c.observation_key for c in commands if c.kind == OBSERVE}
    explained_assessments = {c.assessment_id for c in commands if c.kind == START and c.assessment_id}
    result.duplicate(sum(n for k, n in store.single.items() if k not in explained_obs), "observations no command explains")
    result.duplicate(sum(n for k, n in store.started.items() if k not in explained_assessments),
                     "assessments started that no accepted command explains")
    return result


class _Effects:
    def __init__(self, events: Sequence[Any], read_model: Sequence[Any]) -> None:
        def split(rows: Sequence[Any]) -> tuple[Counter[tuple[str, datetime]], Counter[str]]:
            single = Counter((r["pupil_id"], r["observed_at"]) for r in rows
                             if r["kind"] == "ObservationRecorded" and not r["assessment_id"])
            rated = Counter(r["assessment_id"] for r in rows if r["kind"] == "ObservationRecorded" and r["assessment_id"])
            return single, rated

        self.single, self.rated = split(events)
        self.rm_single, self.rm_rated = split(read_model)
        self.started = Counter(e["assessment_id"] for e in events if e["kind"] == "AssessmentStarted")
        self.completed = Counter(e["assessment_id"] for e in events if e["kind"] == "AssessmentCompleted")


def _reconcile_one(result: Reconciliation, command: Command, store: _Effects, rm_completed: Counter[str]) -> None:
    """Expected effects: (events in the store, rows in the read model), each exactly once."""
    if command.kind == OBSERVE:
        found = [(store.single[command.observation_key], 1), (store.rm_single[command.observation_key], 1)]
    elif command.kind == START:
        found = [(store.started[command.assessment_id or ""], 1)]
    elif command.kind == RATE:
        n = len(STATEMENTS)
        found = [(store.rated[command.assessment_id or ""], n), (store.rm_rated[command.assessment_id or ""], n)]
    else:
        found = [(store.completed[command.assessment_id or ""], 1), (rm_completed[command.assessment_id or ""], 1)]
    where = ("event store", "read model")  # a start has no read-model row to find: `found` may be the shorter
    if command.accepted:
        result.effects += found[0][0]
        for (count, expected), place in zip(found, where, strict=False):
            result.lose(max(0, expected - count), f"{command.kind} {command.key} in the {place}")
            result.duplicate(max(0, count - expected), f"{command.kind} {command.key} in the {place}")
    else:
        for (count, _), place in zip(found, where, strict=False):
            result.duplicate(count, f"rejected {command.kind} {command.key} ({command.status}) acted in the {place}")


# --- memory ----------------------------------------------------------------------------------


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    """Resident memory of each service process and its children, in MB."""
    sizes = {}
    for name, pid in pids.items():
        try:
            process = psutil.Process(pid)
            total = process.memory_info().rss + sum(
                child.memory_info().rss for child in process.children(recursive=True))
        except psutil.Error:
            continue
        sizes[name] = total / 1e6
    return sizes


def cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each service process and its children have used so far."""
    used = {}
    for name, pid in pids.items():
        try:
            process = psutil.Process(pid)
            times = [process.cpu_times(), *(child.cpu_times() for child in process.children(recursive=True))]
        except psutil.Error:
            continue
        used[name] = sum(t.user + t.system for t in times)
    return used


# --- the benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadScale:
    hold_s: float = field(default_factory=lambda: float(os.environ.get("FLOURISH_BENCH_LOAD_SECONDS", "600")))
    ramp_rates: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 80, 100, 130, 160)
    ramp_step_s: float = 20.0
    ramp_warmup_s: float = 5.0
    p99_goal_s: float = 1.0
    pupils: int = 200
    assessment_every_s: float = 10.0
    idle_s: float = 10.0


def scaled_load(factor: float) -> LoadScale:
    """--scale for the load run: the hold and the ramp's steps and warm-up shrink with it (at
    least 10 s of hold, 5 s a step, 3 s of warm-up); rates, pupils, the p99 goal and the idle wait
    for the consumers to join stay put."""
    base = LoadScale()
    if factor >= 1:
        return base
    return replace(base, hold_s=max(10.0, base.hold_s * factor), ramp_step_s=max(5.0, base.ramp_step_s * factor),
                   ramp_warmup_s=max(3.0, base.ramp_warmup_s * factor), idle_s=base.idle_s)


async def run(scale: LoadScale | float | None = None) -> list[dict[str, Any]]:
    """The platform as four processes on the local stack (a database and topics of its own): a
    short ramp finds the highest rate whose p99 stays within the goal, then the load is held."""
    from sqlalchemy import make_url

    from bench.common import create_database
    from flourish.local.postgres import drop_database
    from flourish.local.services import platform_environment, service_pids, start_services, stop_services
    from flourish.local.stack import ensure_stack

    scale = scaled_load(scale) if isinstance(scale, int | float) else scale or LoadScale()
    endpoints = ensure_stack()
    server = make_url(endpoints.database_url)
    database = unique("bench_load_")
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    await create_database(admin, database)
    state = Path(tempfile.mkdtemp(prefix="flourish-bench-load-"))
    settings = Settings(database_url=server.set(database=database).render_as_string(hide_password=False),
                        kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers, state_dir=state,
                        kafka_credentials_dir=Settings().kafka_credentials_dir,  # the local broker's passwords
                        topic_prefix=unique("bench.") + ".",
                        **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in BENCH_PORTS.items()})
    figures: list[dict[str, Any]] = []
    try:
        from flourish.kafka_acls import provision

        await provision(settings)  # the prefix's topics and the services' ACLs, as Kafka's admin
        await asyncio.to_thread(start_services, settings, platform_environment(settings))
        await asyncio.sleep(scale.idle_s)
        idle = rss_mb(service_pids(settings))
        info(f"load: RSS at idle {_mb(idle)}")
        async with httpx.AsyncClient(base_url=settings.assessment_url, timeout=10,
                                     limits=httpx.Limits(max_connections=200)) as client:
            tenant = await setup_tenant(client, DevIssuer(settings), scale.pupils)
            async with Watcher(settings.sync_database_url) as watcher:
                rate, steps = await _ramp(client, tenant, watcher, scale)
                held, busy, cpu_ms = await _hold(client, tenant, watcher, scale, settings, rate)
                drained = await watcher.drained(60)
            commands = [c for run in [*steps, held] for c in run.commands]
            reconciled = await reconcile(settings.sync_database_url, tenant.trust_id, commands)
        info(f"load: reconciled {reconciled.as_dict()}" + ("" if drained else " (read model not drained in 60 s)"))
        baseline = await _raw_latency(kafka_options(settings, ADMIN), settings.topic_prefix, rate, min(scale.hold_s, 30))
        ours = held.latencies_s()
        info(f"load: held {rate}/s (achieved {held.achieved_per_s:.1f}/s) for {scale.hold_s:.0f}s: "
             f"{len(held.of_kind(OBSERVE))} observations, "
             f"assessments {len(held.of_kind(COMPLETE))}; p50 {percentile(ours, 50) * 1000:.0f} ms, "
             f"p99 {percentile(ours, 99) * 1000:.0f} ms, max {max(ours) * 1000:.0f} ms")
        for p in (50, 99):
            figures.append(json.loads(Figure(f"load.observation_to_read_model.p{p}", percentile(ours, p) * 1000, "ms",
                                             f"aiokafka.produce_consume.latency.p{p}", percentile(baseline, p),
                                             LOWER_IS_BETTER).json_line()))
        figures.append({"name": "load.rate", "value": rate, "unit": "observations/s", "held_s": scale.hold_s,
                        "achieved": round(held.achieved_per_s, 1),
                        "rate_goal": 300, "p99_goal_ms": scale.p99_goal_s * 1000,
                        "goal_met": percentile(ours, 99) <= scale.p99_goal_s,  # the p99's goal at the held rate
                        **reconciled.as_dict()})
        for name in BENCH_PORTS:
            figures.append({"name": f"load.rss.{name}", "value": round(busy.get(name, float('nan')), 1), "unit": "MB",
                            "idle": round(idle.get(name, float('nan')), 1), "goal": 300,
                            "cpu_ms_per_observation": round(cpu_ms.get(name, float("nan")), 2)})
    finally:
        await asyncio.to_thread(stop_services, settings)
        await drop_database(admin, database)
        from flourish.kafka_acls import deprovision

        await deprovision(settings, settings.topic_prefix)  # the prefix's topics and ACLs
    return figures


async def _ramp(client: httpx.AsyncClient, tenant: Tenant, watcher: Watcher, scale: LoadScale) -> tuple[float, list[Load]]:
    """Step the rate up until a step misses the goal: p99 over the step (after its warm-up) above
    it, a backlog left at its end (the rate is not sustained even if the step was too short to
    show it in p99), a command not accepted, or a client that could not keep the pace. Returns
    the last rate that met it, and every step's run (for the reconciliation)."""
    best, steps = scale.ramp_rates[0], []
    for rate in scale.ramp_rates:
        step = Load(client, tenant, watcher=watcher, assessment_every_s=scale.assessment_every_s, retry_for_s=30)
        steps.append(step)
        started = time.monotonic()
        await step.run(rate, scale.ramp_step_s)
        kept_pace = step.achieved_per_s >= 0.95 * rate
        no_backlog = await watcher.drained(2)
        latencies = step.latencies_s(since=started + scale.ramp_warmup_s)
        p99 = percentile(latencies, 99) if latencies else float("inf")
        info(f"load: ramp {rate}/s: p99 {p99 * 1000:.0f} ms over {len(latencies)} observations, "
             f"{sum(c.accepted for c in step.commands)}/{len(step.commands)} accepted"
             + ("" if no_backlog else ", backlog at the end") + ("" if kept_pace else ", client fell behind"))
        await watcher.drained(30)
        if p99 > scale.p99_goal_s or not (no_backlog and kept_pace and all(c.accepted for c in step.commands)):
            break
        best = rate
    return best, steps


async def _hold(client: httpx.AsyncClient, tenant: Tenant, watcher: Watcher, scale: LoadScale, settings: Settings,
                rate: float) -> tuple[Load, dict[str, float], dict[str, float]]:
    """The rate held for the whole duration; the peak RSS of each service meanwhile, and the CPU
    milliseconds each service spent per observation sent while it was held."""
    from flourish.local.services import service_pids

    held = Load(client, tenant, watcher=watcher, assessment_every_s=scale.assessment_every_s)
    peak: dict[str, float] = {}

    async def sample() -> None:
        while True:
            await asyncio.sleep(5)
            for name, mb in rss_mb(service_pids(settings)).items():
                peak[name] = max(peak.get(name, 0.0), mb)

    sampler = asyncio.create_task(sample())
    cpu_before = cpu_s(service_pids(settings))
    try:
        await held.run(rate, scale.hold_s)
    finally:
        sampler.cancel()
    observations = max(1, len(held.of_kind(OBSERVE)))
    cpu_ms = {name: (used - cpu_before.get(name, 0.0)) * 1000 / observations
              for name, used in cpu_s(service_pids(settings)).items()}
    info(f"load: peak RSS under load {_mb(peak)}; CPU ms per observation "
         + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu_ms.items()))
    return held, peak, cpu_ms


async def _raw_latency(bootstrap: Mapping[str, Any], prefix: str, rate: float, seconds: float) -> list[float]:
    """The baseline: raw aiokafka producer → consumer at the same rate, latency in ms."""
    messages = wire_messages(make_envelopes(max(1, int(rate * seconds))))
    sent: dict[bytes, float] = {}
    received: dict[bytes, float] = {}
    async with raw_clients(bootstrap, prefix, 3) as (topic, producer, consumer):
        stop = asyncio.Event()

        async def consume() -> None:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                now = time.perf_counter()
                for records in batch.values():
                    for record in records:
                        received[record.headers[1][1]] = now

        async def send(i: int) -> None:
            key, headers, value = messages[i]
            sent[headers[1][1]] = time.perf_counter()
            await producer.send(topic, value=value, key=key, headers=headers)

        reader = asyncio.create_task(consume())
        await asyncio.sleep(2)  # join and get partitions before the clock runs
        await paced(len(messages), rate, send)
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:  # noqa: ASYNC110 - a bounded wait for the reader
            await asyncio.sleep(0.1)
        stop.set()
        await reader
    return [(received[k] - sent[k]) * 1000 for k in sent if k in received]


def _mb(sizes: dict[str, float]) -> str:
    return ", ".join(f"{name} {mb:.0f} MB" for name, mb in sizes.items())


__all__ = ["Command", "Load", "LoadScale", "Reconciliation", "Tenant", "Watcher", "reconcile", "rss_mb", "run",
           "setup_tenant"]
