"""The import contracts in pyproject.toml ([tool.importlinter]) hold today, and each of them fails
when broken: the packages are copied, one violation is planted, and `lint-imports` with the
project's own configuration must name the contract it breaks (and only that one)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = {c["id"]: c["name"]
             for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}


@dataclass(frozen=True)
class Plant:
    contract: str
    module: str  # a new module, path relative to the root
    source: str


PLANTS = [
    Plant("kernel", "shared/planted.py", "import services.assessment\n"),
    Plant("kernel", "shared/planted.py", "from flourish.local import stack\n"),
    Plant("services", "services/reporting/planted.py", "import flourish.local.stack\n"),
    Plant("independent", "services/planning/planted.py", "from services.consent import domain\n"),
    Plant("independent", "services/reporting/planted.py", "def later():\n    import services.assessment.handlers\n"),
    Plant("pure-domain", "services/assessment/domain/planted.py", "import sqlalchemy\n"),
    Plant("pure-domain", "services/planning/domain/planted.py", "from fastapi import APIRouter\n"),
    Plant("pure-domain", "services/consent/domain/planted.py", "import httpx\n"),
    Plant("pure-domain", "services/reporting/audit/domain/planted.py", "from faststream.kafka import KafkaBroker\n"),
    # Through the kernel: a domain reaching the database by way of shared.store is caught too.
    Plant("pure-domain", "services/assessment/domain/planted.py", "import shared.store.db\n"),
]


def copy_of_the_project(into: Path) -> Path:
    for package in ("shared", "services", "flourish"):
        shutil.copytree(ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def lint_imports(root: Path) -> tuple[int, str]:
    """`lint-imports` run in `root`, as `make test` runs it: the packages it finds there, the
    contracts in its pyproject.toml; no cache, so nothing from an earlier run answers."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
         "--no-cache", "--no-logo"],
        check=False, cwd=root, capture_output=True, text=True, timeout=120,
        # Without PYTHONPATH: the copy (the working directory) is what gets analysed.
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(root)},
    )
    return run.returncode, " ".join((run.stdout + run.stderr).split())


def test_every_contract_has_a_planted_violation_below() -> None:
    assert set(CONTRACTS) == {plant.contract for plant in PLANTS}


def test_the_untouched_project_keeps_every_contract(tmp_path: Path) -> None:
    status, output = lint_imports(copy_of_the_project(tmp_path))

    assert status == 0, output
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in output


@pytest.mark.parametrize("plant", PLANTS, ids=lambda p: f"{p.contract}:{p.module}:{p.source.split()[1]}")
def test_a_planted_violation_breaks_its_contract_and_only_that_one(plant: Plant, tmp_path: Path) -> None:
    root = copy_of_the_project(tmp_path)
    target = root / plant.module
    assert not target.exists()
    target.write_text(plant.source)

    status, output = lint_imports(root)

    assert status == 1, output
    assert f"{CONTRACTS[plant.contract]} BROKEN" in output
    assert f"Contracts: {len(CONTRACTS) - 1} kept, 1 broken." in output
    assert plant.module.removesuffix(".py").replace("/", ".") in output  # the offending module is named
