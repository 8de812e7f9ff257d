"""The deployment checks' tools, installed by the project's own script, and the rendered overlays."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.manifests import K8S, OVERLAYS, ROOT, Manifest, render

INSTALLER = ROOT / "deploy" / "tools" / "install.sh"

# Filled by test_metrics.py; printed at the end of every run that reaches it.
PENDING_REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if PENDING_REPORT:
        terminalreporter.section("metrics pending (named by dashboards or alerts, not exported yet)")
        for line in PENDING_REPORT:
            terminalreporter.line(line)


@dataclass(frozen=True)
class Tools:
    kustomize: Path
    promtool: Path


@pytest.fixture(scope="session")
def tools() -> Tools:
    """kustomize and promtool, from deploy/tools/install.sh (a no-op when they are there). A tool
    that cannot be installed fails the run: these checks are never skipped."""
    result = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"deploy/tools/install.sh failed:\n{result.stderr}", pytrace=False)
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    return Tools(kustomize=bin_dir / "kustomize", promtool=bin_dir / "promtool")


@pytest.fixture(scope="session")
def overlays(tools: Tools) -> dict[str, list[Manifest]]:
    """Every overlay, rendered once for the session."""
    return {overlay: render(tools.kustomize, K8S / "overlays" / overlay) for overlay in OVERLAYS}
