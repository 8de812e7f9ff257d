#!/usr/bin/env python3
"""Screenshots of every registered web page, for docs/web.md (not a test).

Starts nothing: given a running platform (`make up`, which starts the web and the dev OpenID
provider with the demo trust), it signs in as each page's demo users through the dev provider's
pick-a-user page, opens each page's demo URLs (services/web/pages: `Page.demo`, paths may name
{trust_id} and {academy_id}) in Debian's headless chromium, writes a PNG of each into docs/web/ and
rewrites docs/web.md's "Screenshots" section to show them.

    .venv/bin/python deploy/tools/web-screenshots.py [--web http://127.0.0.1:8105]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from services.assessment.demo import DEMO  # noqa: E402
from services.web.pages import registered_pages  # noqa: E402

DOCS = ROOT / "docs"
SHOTS = DOCS / "web"
START = "<!-- screenshots: written by deploy/tools/web-screenshots.py -->"
END = "<!-- /screenshots -->"


def chromium() -> str:
    done = subprocess.run([str(ROOT / "deploy/tools/install-chromium.sh"), "--runtime"], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--web", default="http://127.0.0.1:8105", help="the running web's address")
    args = parser.parse_args()
    web = args.web.rstrip("/")
    first_academy = next(iter(DEMO.academies.values()))
    SHOTS.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        for page_spec in registered_pages():
            for user, template in page_spec.demo:
                path = template.format(trust_id=DEMO.trust_id, academy_id=first_academy)
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(f"{web}/sign-in?next={path}")
                page.locator(f'button[name="user"][value="{user}"]').click()
                page.wait_for_url(f"{web}{path}")
                name = re.sub(r"[^a-z0-9]+", "-", f"{page_spec.name}-{user}-{path}".lower()).strip("-")
                page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
                title = page.title()
                lines.append(f"**{title}** (as the demo {user}, `{path}`)\n\n![{title}](web/{name}.png)\n")
                print(f"docs/web/{name}.png  {title}", file=sys.stderr)
                context.close()
        browser.close()
    doc = DOCS / "web.md"
    text = doc.read_text()
    section = f"{START}\n\n" + "\n".join(lines) + f"\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Screenshots\n\n" + section + "\n"
    doc.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
