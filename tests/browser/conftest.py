"""One platform for the whole browser run: the four services, the dev OpenID provider and the web
as real processes (as `make up` starts them) on free ports of the run's own, a database and topics of
its own, the demo trust loaded; one headless Chromium (Debian's, through Playwright's
executable_path), a fresh browser context (no cookies) per test."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from flourish.local import run_sync
from flourish.local.services import platform_environment, start_front, start_services, stop_front, stop_services
from shared.auth import DevIssuer
from shared.settings import Settings
from tests.browser.support import BrowserPlatform, chromium_path
from tests.conftest import TEST_PARTITIONS, database_of_its_own

SERVICE_NAMES = ("assessment", "planning", "consent", "reporting")
# The sharing, agency and DPO screens' tests (test_share.py, test_admin.py, test_dpo.py) register agencies whose
# webhook endpoint is a receiver on 127.0.0.1 (refused outside an allow-list, as in production),
# and see deliveries settle in seconds: three tries, 2 s and 4 s apart, then a dead letter.
SERVICES_ENVIRONMENT = {
    "FLOURISH_SHARING_ALLOWED_PRIVATE_NETWORKS": '["127.0.0.1/32"]',
    "FLOURISH_SHARING_RETRY_SCHEDULE_S": "[0, 2, 4]",
    "FLOURISH_SHARING_POLL_INTERVAL_S": "0.1",
}


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now: several checkouts may run their browser tests at once."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def browser_platform(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserPlatform]:
    from flourish.kafka_acls import deprovision, provision

    state_dir: Path = tmp_path_factory.mktemp("browser-platform")
    ports = free_ports(6)
    service_ports = dict(zip(SERVICE_NAMES, ports[:4], strict=True))
    front_ports = {"web": ports[4], "oidc": ports[5]}
    prefix = f"test.{uuid.uuid4().hex[:10]}."
    run_sync(lambda: provision(stack_settings, prefix, partitions=TEST_PARTITIONS))
    with database_of_its_own(stack_settings, "browser") as own:
        settings = own.model_copy(update={
            "topic_prefix": prefix, "state_dir": state_dir, "jwks_path": state_dir / "dev-issuer" / "jwks.json",
            **{f"{name}_url": f"http://127.0.0.1:{port}" for name, port in service_ports.items()},
        })
        DevIssuer(settings)  # the keys exist before the services read the JWKS
        try:
            start_services(settings, {**platform_environment(settings), **SERVICES_ENVIRONMENT})
            front = {p.name: p.url for p in start_front(settings, ports=front_ports)}
            run_sync(lambda: _load_demo(settings))
            yield BrowserPlatform(settings=settings, web=front["web"], oidc=front["oidc"])
        finally:
            stop_front(settings, ports=front_ports)
            stop_services(settings)
            run_sync(lambda: deprovision(stack_settings, prefix))


async def _load_demo(settings: Settings) -> None:
    from services.assessment.demo import load_demo
    from shared.store.db import create_engine

    engine = create_engine(settings, pool_size=1)
    try:
        await load_demo(engine, settings)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A browser per module: between modules Playwright's event loop is stopped (see
    tests/conftest.py, which runs these tests last)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab that fails its test on any uncaught script error: a page whose script does not even
    parse (a bad merge of static/web.js did this once) would otherwise only lose its enhancements."""
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def platform(browser_platform: BrowserPlatform) -> BrowserPlatform:
    return browser_platform
