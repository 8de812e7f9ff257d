"""Issue 18 item 3 and 5: every benchmark group takes --scale, and the figures' loop is the services'."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

from bench.__main__ import SERVICE_GROUPS
from bench.load import LoadScale, scaled_load
from flourish.local.services import UVICORN_LOOP

ROOT = Path(__file__).resolve().parents[2]


def test_every_group_takes_the_scale() -> None:
    for name in SERVICE_GROUPS:
        run = importlib.import_module(f"bench.{name}").run
        assert "scale" in inspect.signature(run).parameters, name


def test_the_scale_shortens_the_load_run() -> None:
    full, quick = LoadScale(), scaled_load(0.05)
    assert quick.hold_s < full.hold_s and quick.ramp_step_s < full.ramp_step_s
    assert quick.ramp_rates == full.ramp_rates and quick.p99_goal_s == full.p99_goal_s  # the goal stays
    assert scaled_load(1.0) == full


def test_the_benchmarks_default_to_the_services_loop() -> None:
    assert UVICORN_LOOP == ("--loop", "asyncio")
    help_text = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout
    assert "default asyncio" in help_text and "asyncio event loop" in help_text
