"""The web's server-side renders beside the raw API calls each page makes.

A platform of the bench's own (the four services as processes, as `make up` starts them, on a
database, topics and state folder of its own, the demo trust loaded); the web app in-process over
one httpx client to them, signed in through the dev OpenID provider (in-process) as the page's demo
user, so every render carries a real token. For every `bench` entry of the registered pages
(services/web/pages: (demo user, path)): one render records the API calls the page makes; then N
renders are timed through the web app, and N rounds of the same calls made directly with httpx
(the same headers, one after another, as the page makes them). Figure: the render's p95 beside the
raw calls' p95 (ratio < 1: what the web adds on top of the APIs).

    python -m bench --only web        (screen pages add a `bench=((user, path),)` to their Page)
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from html import unescape
from typing import Any

import httpx

from bench.common import LOWER_IS_BETTER, Figure, info, own_database, own_state, percentile, unique
from shared.settings import Settings

RENDERS = 200  # × --scale
SERVICE_NAMES = ("assessment", "planning", "consent", "reporting")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
WEB = "http://web.bench"
IDP = "http://idp.bench"


async def run(scale: float = 1.0) -> list[dict[str, Any]]:
    from flourish.kafka_acls import deprovision, provision
    from flourish.local.services import platform_environment, start_services, stop_services
    from flourish.local.stack import ensure_stack
    from shared.auth import DevIssuer

    endpoints = ensure_stack()
    prefix = unique("bench.") + "."
    async with own_database(endpoints.database_url, "web") as database_url:
        settings = own_state(Settings(database_url=database_url, kafka_bootstrap_servers=endpoints.kafka_bootstrap_servers,
                                      topic_prefix=prefix, log_level="WARNING",
                                      **{f"{n}_url": f"http://127.0.0.1:{p}"
                                         for n, p in zip(SERVICE_NAMES, _free_ports(4), strict=True)}), "web")
        DevIssuer(settings)
        await provision(settings)
        try:
            await asyncio.to_thread(start_services, settings, platform_environment(settings))
            await _load_demo(settings)
            return await _measure(settings, max(10, int(RENDERS * scale)))
        finally:
            await asyncio.to_thread(stop_services, settings)
            await deprovision(settings, prefix)


async def _load_demo(settings: Settings) -> None:
    from services.assessment.demo import load_demo
    from shared.store.db import create_engine

    engine = create_engine(settings, pool_size=1)
    try:
        await load_demo(engine, settings)
    finally:
        await engine.dispose()


async def _measure(settings: Settings, renders: int) -> list[dict[str, Any]]:
    from flourish.local.oidc import WEB_CLIENT_ID
    from flourish.local.oidc import create_app as provider_app
    from services.web.app import create_app as web_app
    from services.web.pages import registered_pages
    from services.web.settings import WebSettings

    recorded: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        if not str(request.url).startswith(IDP):
            recorded.append(request)

    web_settings = WebSettings(oidc_discovery_url=f"{IDP}/.well-known/openid-configuration", public_url=WEB)
    provider = provider_app(settings, {WEB_CLIENT_ID: [web_settings.redirect_uri]}, public_url=IDP)
    upstream = httpx.AsyncClient(mounts={IDP: httpx.ASGITransport(provider)}, event_hooks={"request": [record]},
                                 timeout=30)
    pages = registered_pages()
    app = web_app(web_settings, settings, http=upstream, pages=pages)
    figures: list[dict[str, Any]] = []
    direct = httpx.AsyncClient(timeout=30)
    try:
        for page in pages:
            for user, path in page.bench:
                async with httpx.AsyncClient(mounts={IDP: httpx.ASGITransport(provider),
                                                     WEB: httpx.ASGITransport(app)}) as browser:
                    await _sign_in(browser, user)
                    recorded.clear()
                    first = await browser.get(f"{WEB}{path}")
                    assert first.status_code == 200, f"{path} as {user}: {first.status_code}"
                    calls = list(recorded)
                    rendered, raw = await _time_both(renders, lambda b=browser, p=path: b.get(f"{WEB}{p}"),
                                                     lambda c=calls: _replay(direct, c))
                figure = Figure(f"web.render_p95.{page.name}:{path}", percentile(rendered, 95) * 1000, "ms",
                                f"the same {len(calls)} API call(s) made directly (p95)",
                                percentile(raw, 95) * 1000, LOWER_IS_BETTER)
                info(f"web {path} as {user}: render p95 {figure.value:.1f} ms, raw calls p95 {figure.baseline_value:.1f} ms")
                figures.append({**_json(figure), "renders": renders, "api_calls": len(calls)})
    finally:
        await upstream.aclose()
        await direct.aclose()
    return figures


async def _sign_in(browser: httpx.AsyncClient, user: str) -> None:
    page = await browser.get(f"{WEB}/", follow_redirects=True)
    for form in re.findall(r'<form method="post" action="/authorize">(.*?)</form>', page.text, re.S):
        fields = {k: unescape(v) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', form)}
        if fields.get("user") == user:
            done = await browser.post(f"{IDP}/authorize", data=fields, follow_redirects=True)
            assert done.status_code == 200, done.text[:200]
            return
    raise AssertionError(f"no demo user {user}")


async def _replay(client: httpx.AsyncClient, calls: list[httpx.Request]) -> None:
    for call in calls:
        response = await client.request(call.method, call.url, headers=call.headers, content=call.content)
        response.raise_for_status()


async def _time_both(count: int, render: Any, raw: Any) -> tuple[list[float], list[float]]:
    """Alternately, so neither side gets the warmer service or the quieter machine."""
    await render()
    await raw()  # warm
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(count):
        for side, once in enumerate((render, raw)):
            started = time.perf_counter()
            await once()
            times[side].append(time.perf_counter() - started)
    return times


def _json(figure: Figure) -> dict[str, Any]:
    import json

    line: dict[str, Any] = json.loads(figure.json_line())
    return line


if __name__ == "__main__":
    import json

    for line in asyncio.run(run()):
        print(json.dumps(line))
