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

A path naming `{pupil_id}` (the child's page) gets the first Oak Hill demo pupil, first given what a
child's page shows: a completed Being assessment, an issued plan and a logged session (`_a_child`).
A path naming `{screening_id}` (the screening grid) gets a class of 30 pupils imported through the
roster API, screened on the Being strand (45 statements) and rated in every cell (`_a_screening`).
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
        needs_child = any("{pupil_id}" in path for page in pages for _, path in page.bench)
        pupil_id = await _a_child(settings, direct) if needs_child else ""
        needs_screening = any("{screening_id}" in path for page in pages for _, path in page.bench)
        screening_id = await _a_screening(settings, direct) if needs_screening else ""
        for page in pages:
            for user, template in page.bench:
                path = template.replace("{pupil_id}", pupil_id).replace("{screening_id}", screening_id)
                async with httpx.AsyncClient(mounts={IDP: httpx.ASGITransport(provider),
                                                     WEB: httpx.ASGITransport(app)}) as browser:
                    await _sign_in(browser, user)
                    recorded.clear()
                    first = await browser.get(f"{WEB}{path}")
                    assert first.status_code == 200, f"{path} as {user}: {first.status_code}"
                    calls = list(recorded)
                    rendered, raw = await _time_both(renders, lambda b=browser, p=path: b.get(f"{WEB}{p}"),
                                                     lambda c=calls: _replay(direct, c))
                figure = Figure(f"web.render_p95.{page.name}:{template}", percentile(rendered, 95) * 1000, "ms",
                                f"the same {len(calls)} API call(s) made directly (p95)",
                                percentile(raw, 95) * 1000, LOWER_IS_BETTER)
                info(f"web {path} as {user}: render p95 {figure.value:.1f} ms, raw calls p95 {figure.baseline_value:.1f} ms")
                figures.append({**_json(figure), "renders": renders, "api_calls": len(calls)})
    finally:
        await upstream.aclose()
        await direct.aclose()
    return figures


async def _a_child(settings: Settings, client: httpx.AsyncClient) -> str:
    """The first Oak Hill demo pupil with a completed Being assessment (every statement rated), an
    issued plan from the suggestion and one session, once planning and reporting have taken it in."""
    import uuid
    from datetime import UTC, date, datetime, timedelta

    from services.assessment.demo import DEMO
    from services.assessment.framework_store import sample_framework
    from shared.auth import DevIssuer, Role

    academy_id = DEMO.academies["Oak Hill Primary"]
    token = DevIssuer(settings).issue("bench-senco", (Role.senco,), DEMO.trust_id, (academy_id,))
    url = {name: str(getattr(settings, f"{name}_url")) for name in SERVICE_NAMES}

    async def call(method: str, service: str, path: str, **kwargs: Any) -> Any:
        response = await client.request(method, url[service] + path, headers={
            "Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    classes = await call("GET", "assessment", f"/academies/{academy_id}/classes")
    pupils = await call("GET", "assessment", f"/classes/{classes['items'][0]['class_id']}/pupils")
    pupil_id = str(pupils["items"][0]["pupil_id"])
    framework = sample_framework()
    started = await call("POST", "assessment", "/assessments",
                         json={"pupil_id": pupil_id, "strands": ["being"], "framework_version": framework.version})
    assessment_id = str(started["assessments"][0]["assessment_id"])
    levels = ("rarely", "emerging", "developing", "secure")
    await call("POST", "assessment", "/observations/bulk", json={
        "observed_at": datetime.now(UTC).isoformat(),
        "ratings": [{"pupil_id": pupil_id, "statement_id": s, "level": levels[i % 4], "assessment_id": assessment_id}
                    for i, s in enumerate(framework.statement_ids(["being"]))]})
    await call("POST", "assessment", f"/assessments/{assessment_id}/complete")
    for _ in range(300):
        suggestion = await client.get(f"{url['planning']}/pupils/{pupil_id}/suggestion",
                                      headers={"Authorization": f"Bearer {token}"})
        profile = await client.get(f"{url['reporting']}/pupils/{pupil_id}/profile",
                                   headers={"Authorization": f"Bearer {token}"})
        if (suggestion.status_code == 200 and assessment_id in [str(a) for a in suggestion.json()["based_on"]]
                and profile.status_code == 200 and str(profile.json()["latest_assessment_id"]) == assessment_id):
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError("planning and reporting did not take the bench child's assessment in")
    suggested = suggestion.json()
    plan = await call("POST", "planning", "/plans", json={
        "kind": "individual", "pupil_ids": [pupil_id], "strand": suggested["strand"],
        "targets": [t["statement_id"] for t in suggested["targets"]][:4],
        "activities": [a["activity"] for a in suggested["activities"]],
        "frequency": {k: suggested["frequency"][k] for k in ("sessions_per_week", "minutes", "setting")},
        "review_on": str(date.today() + timedelta(weeks=6))})
    await call("POST", "planning", f"/plans/{plan['plan_id']}/issue", json={"practitioner_id": "bench-senco"})
    await call("POST", "planning", f"/plans/{plan['plan_id']}/sessions",
               json={"held_on": str(date.today()), "minutes": 20})
    return pupil_id


CLASS_SIZE = 30


async def _a_screening(settings: Settings, client: httpx.AsyncClient) -> str:
    """A Year 4 class of 30 (imported through the roster API into Oak Hill), screened on the Being
    strand with every one of its statements rated for every child: the grid at its fullest."""
    import uuid
    from datetime import UTC, datetime

    from services.assessment.demo import DEMO, HEADER
    from services.assessment.framework_store import sample_framework
    from shared.auth import DevIssuer, Role

    academy_id = DEMO.academies["Oak Hill Primary"]
    token = DevIssuer(settings).issue("bench-senco", (Role.senco, Role.trust_admin), DEMO.trust_id, (academy_id,))
    url = str(settings.assessment_url)

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        response = await client.request(method, url + path, headers={
            "Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4()), **kwargs.pop("headers", {})},
            **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    rows = [f"Z09{n:09d}A,Bench{n:02d},Pupil{n:02d},{1 + n % 28:02d}/{1 + n % 12:02d}/2017,{'FM'[n % 2]},4,4Z"
            for n in range(CLASS_SIZE)]
    roster = ("\r\n".join([HEADER, *rows]) + "\r\n").encode()
    await call("POST", f"/academies/{academy_id}/roster-imports", content=roster, headers={"Content-Type": "text/csv"})
    classes = await call("GET", f"/academies/{academy_id}/classes", params={"limit": 200})
    class_id = next(c["class_id"] for c in classes["items"] if c["name"] == "4Z")
    framework = sample_framework()
    statements = framework.statement_ids(["being"])
    started = await call("POST", "/assessments", json={"class_id": class_id, "strands": ["being"],
                                                       "framework_version": framework.version})
    levels = ("rarely", "emerging", "developing", "secure")
    await call("POST", "/observations/bulk", json={
        "observed_at": datetime.now(UTC).isoformat(),
        "ratings": [{"pupil_id": a["pupil_id"], "statement_id": s, "level": levels[(i + j) % 4],
                     "assessment_id": a["assessment_id"]}
                    for i, a in enumerate(started["assessments"]) for j, s in enumerate(statements)]})
    info(f"web: a screening of {len(started['assessments'])} pupils x {len(statements)} statements, every cell rated")
    return str(started["screening_id"])


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
