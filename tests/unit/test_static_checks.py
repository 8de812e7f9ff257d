"""The static checks `make test` runs are really on: mypy is strict where pyproject says (the kernel
and the domain packages) and lenient elsewhere, and ruff refuses a blind except and a secret made
with `random`. Each test plants code that breaks a rule and shows the checker refuses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"

UNTYPED = "def passthrough(value):\n    return value\n"
BARE_GENERIC = "def names() -> list:\n    return []\n"


def _plant(root: Path, module: str, source: str) -> Path:
    """Write `module` (dotted) under `root`, with the __init__.py of each package above it."""
    parts = module.split(".")
    directory = root
    for package in parts[:-1]:
        directory = directory / package
        directory.mkdir(exist_ok=True)
        (directory / "__init__.py").touch()
    path = directory / f"{parts[-1]}.py"
    path.write_text(source)
    return path


def _mypy(tmp_path: Path, *files: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT), "--cache-dir", str(tmp_path / "cache"),
         "--no-error-summary", "--no-warn-unused-configs", *(str(f.relative_to(tmp_path)) for f in files)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr  # 2 would be mypy failing to run, not a finding
    return result.stdout


def test_mypy_is_strict_on_the_kernel_and_the_domains_and_lenient_elsewhere(tmp_path: Path) -> None:
    kernel = _plant(tmp_path, "shared.planted", UNTYPED + BARE_GENERIC)
    domain = _plant(tmp_path, "services.planted.domain.rules", UNTYPED)
    nested_domain = _plant(tmp_path, "services.planted.audit.domain.facts", UNTYPED)
    entry_point = _plant(tmp_path, "services.planted.api", UNTYPED + BARE_GENERIC)

    out = _mypy(tmp_path, kernel, domain, nested_domain, entry_point)

    assert "shared/planted.py:1: error: Function is missing a type annotation  [no-untyped-def]" in out, out
    assert 'shared/planted.py:3: error: Missing type arguments for generic type "list"  [type-arg]' in out, out
    assert "services/planted/domain/rules.py:1: error: Function is missing a type annotation" in out, out
    assert "services/planted/audit/domain/facts.py:1: error: Function is missing a type annotation" in out, out
    assert "services/planted/api.py" not in out, out


def test_mypy_passes_typed_code_in_the_kernel(tmp_path: Path) -> None:
    typed = _plant(tmp_path, "shared.planted", "def passthrough(value: int) -> int:\n    return value\n")

    assert _mypy(tmp_path, typed) == ""


def _ruff(source: str, filename: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", str(PYPROJECT), "--no-cache", "--output-format", "concise",
         "--stdin-filename", filename, "-"],
        cwd=ROOT, input=source, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


SWALLOWS_AND_GUESSES = '''"""Planted."""

import random


def token() -> str:
    try:
        return str(random.randint(0, 2**128))
    except Exception:
        return ""
'''


def test_ruff_refuses_a_blind_except_and_a_secret_from_random_in_service_code() -> None:
    out = _ruff(SWALLOWS_AND_GUESSES, "shared/planted.py")

    assert "BLE001" in out, out
    assert "S311" in out, out


def test_ruff_accepts_a_blind_except_that_says_why() -> None:
    source = SWALLOWS_AND_GUESSES.replace(
        "except Exception:", "except Exception:  # noqa: BLE001 - planted: the reason goes here"
    ).replace("random.randint(0, 2**128))", "random.randint(0, 2**128))  # noqa: S311 - planted")

    assert _ruff(source, "shared/planted.py") == "All checks passed!\n"
