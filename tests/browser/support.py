"""What every browser test uses: the running platform's addresses, `signed_in(page, user)` through
the dev provider's pick-a-user page, and `axe(page)` (axe-core, vendored, hash-checked) failing on
any serious or critical accessibility violation.

    def test_my_screen(platform: BrowserPlatform, page: Page) -> None:
        signed_in(page, platform, "senco")
        page.goto(platform.web + "/my-screen")
        axe(page)
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from services.assessment.demo import DEMO
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VENDOR = Path(__file__).parent / "vendor"
AXE_SOURCE = (VENDOR / "axe.min.js").read_text()
# axe's impact levels the tests refuse; "moderate" and "minor" are reported, not failed.
REFUSED_IMPACTS = frozenset({"serious", "critical"})


@dataclass
class BrowserPlatform:
    """The four services, the dev OpenID provider and the web, running as processes on the test
    run's database with the demo trust loaded."""

    settings: Settings
    web: str
    oidc: str
    trust_id: uuid.UUID = DEMO.trust_id
    academies: dict[str, uuid.UUID] = field(default_factory=lambda: dict(DEMO.academies))

    def api(self, service: str) -> str:
        return str(getattr(self.settings, f"{service}_url"))

    def headers(self, user: str) -> dict[str, str]:
        """`Authorization` for calling an API directly as a demo user (to set up or check data
        beside the browser): the token the dev provider would give them."""
        from flourish.local.oidc import USERS_BY_KEY
        from shared.auth import DevIssuer

        demo = USERS_BY_KEY[user]
        token = DevIssuer(self.settings).issue(demo.subject, demo.roles, self.trust_id, demo.academy_ids)
        return {"Authorization": f"Bearer {token}"}


def chromium_path() -> str:
    """Debian's chromium through deploy/tools/install-chromium.sh (installs it if missing, or fails;
    prints its path last): never a browser download."""
    done = subprocess.run([str(ROOT / "deploy/tools/install-chromium.sh")], capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def signed_in(page: Page, platform: BrowserPlatform, user: str = "senco", next_path: str = "/") -> Page:
    """Sign in as a demo user (flourish/local/oidc.py DEMO_USERS key) through the real flow: the web
    sends the browser to the provider, the user picks themself, the provider sends them back."""
    page.goto(f"{platform.web}/sign-in?next={next_path}")
    page.locator(f'button[name="user"][value="{user}"]').click()
    page.wait_for_url(f"{platform.web}{next_path}")
    return page


def axe(page: Page, *, context: str | None = None) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now; fail on any serious or critical violation. The source
    is evaluated through the DevTools protocol, so the page's CSP need not allow it."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_SOURCE)
    result = page.evaluate("async (ctx) => await axe.run(ctx || document, {resultTypes: ['violations']})", context)
    violations: list[dict[str, Any]] = result["violations"]
    refused = [v for v in violations if v.get("impact") in REFUSED_IMPACTS]
    assert not refused, f"{page.url}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in refused)
    return violations
