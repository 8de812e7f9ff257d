"""``python -m bench``: run the benchmarks, one JSON line per figure on stdout.

    python -m bench                      # everything (two minutes on two cores, plus the load run:
                                         #   ramp + FLOURISH_BENCH_LOAD_SECONDS)
    python -m bench --only store         # one group: store, pipeline, or a service (assessment, consent,
                                         #   planning, audit, reporting, reporting_sharing, web)
    python -m bench --only load          # the platform under steady load (FLOURISH_BENCH_LOAD_SECONDS, default 600)
    python -m bench --scale 0.25         # smaller runs (quick check; figures are noisier); every group
                                         #   takes it (the load run's ramp and hold shrink with it)
    python -m bench --loop uvloop        # uvloop instead of the services' loop (prints a warning)

Every figure runs on the asyncio event loop, the services' loop: they run under uvicorn
`--loop asyncio` (flourish/local/services.py UVICORN_LOOP says why), so the benchmarks do too, and
each JSON line carries "loop" in its details. Every group works in a database, topic prefix and
state folder of its own, never in the live platform's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace

from bench import pipeline, store
from bench.common import Figure, info, own_database
from shared.settings import Settings

# Each service's benchmarks live in bench/<service>.py as `async def run() -> list[dict]`, one dict
# per JSON line; they start what they need themselves.
SERVICE_GROUPS = ("assessment", "consent", "planning", "audit", "reporting", "reporting_sharing", "web", "load")
GROUPS = ("store", "pipeline", *SERVICE_GROUPS)


def _scaled(scale: object, factor: float) -> object:
    """Scale the counts of a *Scale dataclass (concurrency, rates and warm-ups stay put)."""
    keep = {"single_concurrency", "streams_per_batch", "batch_size", "rate_per_s", "partitions",
            "single_warmup", "batch_warmup", "warmup_events", "warmup_s", "drain_timeout_s",
            "append_batch"}
    changes = {}
    for field in fields(scale):  # type: ignore[arg-type]
        value = getattr(scale, field.name)
        if field.name in keep or not isinstance(value, int | float):
            continue
        changes[field.name] = type(value)(max(1, value * factor))
    return replace(scale, **changes)  # type: ignore[type-var]


async def main(args: argparse.Namespace) -> int:
    from flourish.local.stack import ensure_stack

    # The benchmarks run the local stack, and platforms of their own in state folders of their own,
    # with dev secrets: development (production is the default), unless FLOURISH_ENVIRONMENT says.
    os.environ.setdefault("FLOURISH_ENVIRONMENT", "development")

    endpoints = ensure_stack()
    loop = loop_name()
    info(f"python {platform.python_version()}, loop {loop}, postgres {endpoints.database_url.rsplit('@', 1)[-1]}, "
         f"kafka {endpoints.kafka_bootstrap_servers}, scale {args.scale}, load {os.getloadavg()}")
    wanted = [group for group in GROUPS if not args.only or group in args.only]
    if {"store", "pipeline"} & set(wanted):
        # store's and pipeline's schemas and topics are their own; the database is too, so that
        # nothing of a bench lands in the live platform's database.
        async with own_database(endpoints.database_url, "kernel") as database_url:
            settings = Settings(database_url=database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers)
            return await _run_groups(args, settings, loop)
    settings = Settings(database_url=endpoints.database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers)
    return await _run_groups(args, settings, loop)


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


async def _run_groups(args: argparse.Namespace, settings: Settings, loop: str) -> int:

    store_scale = _scaled(store.StoreScale(), args.scale)
    pipe_scale = _scaled(pipeline.PipelineScale(), args.scale)
    runs: list[tuple[str, Callable[[], Awaitable[list[Figure] | Figure]]]] = [
        ("store", lambda: store.append_single(settings, store_scale)),  # type: ignore[arg-type]
        ("store", lambda: store.append_batched(settings, store_scale)),  # type: ignore[arg-type]
        ("store", lambda: store.append_batched_sealing(settings, store_scale)),  # type: ignore[arg-type]
        ("pipeline", lambda: pipeline.throughput(settings, pipe_scale)),  # type: ignore[arg-type]
        ("pipeline", lambda: pipeline.latency(settings, pipe_scale)),  # type: ignore[arg-type]
        ("pipeline", lambda: pipeline.throughput_sealing(settings, pipe_scale)),  # type: ignore[arg-type]
    ]
    for name in SERVICE_GROUPS:
        runs.append((name, _service_benchmarks(name, args.scale)))
    failures = 0
    started = time.perf_counter()
    for group, run in runs:
        if args.only and group not in args.only:
            continue
        try:
            result = await run()
        except Exception:
            failures += 1
            logging.getLogger("bench").exception("a benchmark failed; the others still run")
            continue
        for figure in result if isinstance(result, list) else [result]:
            line = figure if isinstance(figure, dict) else json.loads(figure.json_line())
            print(json.dumps({**line, "loop": loop, "scale": args.scale}), flush=True)
    info(f"done in {time.perf_counter() - started:.0f}s" + (f", {failures} benchmark(s) failed" if failures else ""))
    return 1 if failures else 0


def _service_benchmarks(name: str, scale: float) -> Callable[[], Awaitable[list[dict[str, object]]]]:
    async def run() -> list[dict[str, object]]:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as missing:
            if missing.name != f"bench.{name}":
                raise
            info(f"{name}: no benchmarks yet")
            return []
        return await module.run(scale=scale)  # type: ignore[no-any-return]

    return run


def cli() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=GROUPS, help="run only this group (repeatable)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply event counts and durations")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop (default asyncio, the services' loop under uvicorn --loop asyncio; "
                             "uvloop is not the services' loop and its figures do not describe them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            info("uvloop is not installed; using the asyncio loop")
        else:
            info("WARNING: --loop uvloop is not the services' loop (they run uvicorn --loop asyncio, "
                 "flourish/local/services.py UVICORN_LOOP): these figures do not describe the services")
            return uvloop.run(main(args))
    return asyncio.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
