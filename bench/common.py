"""What every benchmark shares: the figures it prints, fresh schemas and topics, same-size events."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import MetaData, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.datakeys import DataKey, new_data_key
from shared.events.assessment import ObservationRecorded
from shared.events.envelope import Envelope
from shared.events.registry import register
from shared.events.sealing import EventSealing
from shared.settings import Settings
from shared.store.tables import KernelTables, kernel_tables

TRUST = uuid.UUID("00000000-0000-4000-8000-000000000001")
ACADEMY = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
SOURCE = "/flourish/bench"

# Which way a figure is better decides how its ratio is computed, so that for every figure
# ratio > 1 means "ours beats the baseline" and ratio < 1 means "ours is slower".
HIGHER_IS_BETTER = "higher"
LOWER_IS_BETTER = "lower"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    better: str  # HIGHER_IS_BETTER (throughput) or LOWER_IS_BETTER (latency)

    @property
    def ratio(self) -> float:
        if self.better == HIGHER_IS_BETTER:
            return self.value / self.baseline_value if self.baseline_value else math.nan
        return self.baseline_value / self.value if self.value else math.nan

    def json_line(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "value": _round(self.value),
                "unit": self.unit,
                "baseline": self.baseline,
                "baseline_value": _round(self.baseline_value),
                "ratio": round(self.ratio, 3),
            }
        )


def _round(value: float) -> float:
    return round(value, 2) if abs(value) < 100 else round(value, 1)


def emit(figure: Figure) -> None:
    """One JSON line per figure on stdout (nothing else ever goes to stdout)."""
    print(figure.json_line(), flush=True)


def info(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def asyncpg_dsn(settings: Settings) -> str:
    return settings.sync_database_url


class BenchKeyring:
    """Pupils' keys in memory: what a service's DataKeyClient holds once it has fetched a pupil's
    key (one fetch per pupil per FLOURISH_DATA_KEY_CACHE_TTL_S; the figures leave that fetch out)."""

    def __init__(self) -> None:
        self.keys: dict[uuid.UUID, DataKey] = {}

    async def key_for(self, trust_id: uuid.UUID, pupil_id: uuid.UUID) -> DataKey:
        key = self.keys.get(pupil_id)
        if key is None:
            key = self.keys[pupil_id] = new_data_key(trust_id, pupil_id)
        return key

    def forget(self, pupil_id: uuid.UUID) -> None:
        self.keys.pop(pupil_id, None)


SEALING = EventSealing(BenchKeyring())


class UnsealedObservation(ObservationRecorded):
    """The same event with nothing declared personal: the "without sealing" side of the sealing
    figures. Registered by `unsealed()` when a benchmark first needs it, never at import: the crash
    test imports bench's load, and the registry a test run sees must be the platform's alone."""

    personal = frozenset()


def unsealed() -> type[UnsealedObservation]:
    if UnsealedObservation.__dict__.get("event_type") is None:
        register("flourish.bench.UnsealedObservation.v1", "assessment")(UnsealedObservation)
    return UnsealedObservation


def observation(pupil_id: uuid.UUID, *, sealed: bool = True) -> Envelope:
    """An ObservationRecorded as the assessment service appends it (every optional id set, so the
    payload is a realistic ~330 bytes of JSON); `sealed=False`: the same event, nothing sealed."""
    data = (ObservationRecorded if sealed else unsealed())(
        observation_id=uuid.uuid4(),
        pupil_id=pupil_id,
        assessment_id=uuid.uuid4(),
        framework_version="thrive-2024.1",
        statement_id="being.safe.1",
        level="emerging",
        observer_id="staff-0001",
        observed_at=datetime.now(UTC),
    )
    return Envelope(data=data, trust_id=TRUST, academy_id=ACADEMY, source=SOURCE)


def stream_of(pupil_id: uuid.UUID) -> str:
    return f"pupil-{pupil_id}"


@asynccontextmanager
async def fresh_schema(engine: AsyncEngine, label: str) -> AsyncIterator[KernelTables]:
    """A schema of its own with the kernel's tables in it, dropped afterwards whatever happens."""
    schema = unique(f"bench_{label}_")
    metadata = MetaData(schema=schema)
    tables = kernel_tables(metadata)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    info(f"schema {schema} created")
    try:
        yield tables
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        info(f"schema {schema} dropped")


async def delete_topics(bootstrap: Mapping[str, Any], topics: Sequence[str]) -> None:
    """Remove a bench's topics (best effort: a broker refusing deletes only leaves litter)."""
    admin = AIOKafkaAdminClient(**bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [topic for topic in topics if topic in existing]
        if doomed:
            await admin.delete_topics(doomed)
    except Exception as error:  # noqa: BLE001 - cleanup must not hide the figures
        info(f"could not delete topics {list(topics)}: {type(error).__name__}: {error}")
    finally:
        await admin.close()


async def run_workers(items: Sequence[Any], concurrency: int, work: Callable[[Any], Awaitable[None]]) -> None:
    """Run `work` over items with `concurrency` tasks pulling from one shared iterator."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def paced(count: int, rate_per_s: float, start: Callable[[int], Awaitable[None]]) -> float:
    """Open-loop load: start item i at t0 + i/rate whatever earlier items are doing (a slow
    item does not slow the rate, so queueing shows up as latency). Returns the achieved rate."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    t0 = loop.time()
    for i in range(count):
        delay = t0 + i / rate_per_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(i)))
    elapsed = loop.time() - t0
    await asyncio.gather(*tasks)
    return count / elapsed if elapsed > 0 else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def own_database(database_url: str, label: str) -> AsyncIterator[str]:
    """A database of the benchmark's own on the stack's server, migrated as its owner (services only
    check their schema is at head: the migration step is flourish.local.migrate's), dropped after.
    Yields its URL. The services' schemas have fixed names, and a platform started with `make up`
    on the same server must neither see nor relay bench events."""
    from flourish.local.migrate import migrate
    from flourish.local.postgres import drop_database

    server = make_url(database_url)
    database = unique(f"bench_{label}_")
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    await create_database(admin, database)
    url = server.set(database=database).render_as_string(hide_password=False)
    try:
        await migrate(Settings(database_url=url))
        yield url
    finally:
        await drop_database(admin, database)


async def create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def own_state(settings: Settings, label: str) -> Settings:
    """The settings with a state folder of the benchmark's own (its dev issuer's keys among them),
    so that nothing a bench does lands in the live platform's state; the local broker's passwords
    are still read where the live stack keeps them (resolved when `settings` was made)."""
    import tempfile
    from pathlib import Path

    state = Path(tempfile.mkdtemp(prefix=f"flourish-bench-{label}-"))
    return settings.model_copy(update={"state_dir": state, "jwks_path": state / "dev-issuer" / "jwks.json"})
