"""The load client of the single-request figures, in a process of its own (so the server's CPU
time is the server's alone): ``python -m bench.http_client < SPEC``.

SPEC (stdin) is JSON: {"url", "path", "headers", "bodies", "concurrency", "idempotency_keys"}. Each
body is POSTed once, `concurrency` requests in flight on one httpx client (keep-alive), each with a
fresh Idempotency-Key when `idempotency_keys`. Prints one JSON line: count, seconds, rate,
p50_ms, p99_ms and the statuses seen.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from typing import Any

import httpx


async def post_all(spec: dict[str, Any]) -> dict[str, Any]:
    bodies = iter(spec["bodies"])
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=spec["concurrency"], max_keepalive_connections=spec["concurrency"])
    async with httpx.AsyncClient(base_url=spec["url"], timeout=60, limits=limits) as client:

        async def worker() -> None:
            for body in bodies:
                headers = dict(spec["headers"])
                if spec.get("idempotency_keys"):
                    headers["Idempotency-Key"] = str(uuid.uuid4())
                t0 = time.perf_counter()
                response = await client.post(spec["path"], json=body, headers=headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[response.status_code] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
        seconds = time.perf_counter() - t0
    ordered = sorted(latencies)
    return {"count": len(ordered), "seconds": seconds, "rate": len(ordered) / seconds,
            "p50_ms": ordered[len(ordered) // 2], "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)],
            "statuses": {str(k): v for k, v in statuses.items()}}


def main() -> None:
    spec = json.load(sys.stdin)
    print(json.dumps(asyncio.run(post_all(spec))), flush=True)  # the services' loop


if __name__ == "__main__":
    main()
