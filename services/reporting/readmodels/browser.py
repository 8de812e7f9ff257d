"""Headless Chromium, for the report's PDF (and the tests' rendering): a fresh profile per run."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class BrowserUnavailable(RuntimeError):
    pass


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise BrowserUnavailable("chromium is not installed (deploy/tools/install-chromium.sh)")
    return found


async def run_chromium(url_or_file: str, *args: str, timeout: float = 60.0) -> bytes:
    """Run chromium on a page with extra args; returns its stdout (what --dump-dom prints)."""
    with tempfile.TemporaryDirectory(prefix="flourish-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            chromium_path(), *FLAGS, f"--user-data-dir={profile}", *args, url_or_file,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise BrowserUnavailable("chromium did not finish in time") from None
        if process.returncode != 0:
            raise BrowserUnavailable(f"chromium failed ({process.returncode}): {err.decode(errors='replace')[-300:]}")
        return out


async def html_to_pdf(html: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="flourish-report-") as work:
        page, pdf = Path(work) / "report.html", Path(work) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        await run_chromium(page.as_uri(), f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
        if not pdf.exists() or pdf.stat().st_size == 0:
            raise BrowserUnavailable("chromium wrote no PDF")
        return pdf.read_bytes()
