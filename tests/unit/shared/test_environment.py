"""Production is the default: a state directory is development only when the local launcher marked
it so (`flourish infra up` / `platform up` write `<state_dir>/environment`), FLOURISH_ENVIRONMENT
always wins, and `flourish dev-token` refuses in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flourish.cli import app as cli
from shared.settings import Settings, mark_development


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py asks for development for the whole run; these tests read the default.
    monkeypatch.delenv("FLOURISH_ENVIRONMENT", raising=False)


def test_an_unmarked_state_dir_is_production(unset: None, tmp_path: Path) -> None:
    assert Settings(state_dir=tmp_path).environment == "production"


def test_the_launchers_mark_makes_it_development(unset: None, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    mark_development(tmp_path)
    assert Settings(state_dir=tmp_path).environment == "development"
    monkeypatch.setenv("FLOURISH_STATE_DIR", str(tmp_path))
    assert Settings().environment == "development"


@pytest.mark.parametrize("word", ["production", "dev", "", "DEVELOPMENT please"])
def test_any_other_word_in_the_file_is_production(unset: None, tmp_path: Path, word: str) -> None:
    (tmp_path / "environment").write_text(word)
    assert Settings(state_dir=tmp_path).environment == "production"


def test_flourish_environment_production_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mark_development(tmp_path)
    monkeypatch.setenv("FLOURISH_ENVIRONMENT", "production")
    assert Settings(state_dir=tmp_path).environment == "production"


def test_dev_token_refuses_in_production(unset: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOURISH_STATE_DIR", str(tmp_path))
    arguments = ["dev-token", "--role", "senco", "--trust", "00000000-0000-0000-0000-000000000001"]
    refused = CliRunner().invoke(cli, arguments)
    assert refused.exit_code == 2
    assert "refuses in production" in refused.output
    assert not (tmp_path / "dev-issuer").exists()  # no dev signing key was made

    monkeypatch.setenv("FLOURISH_ENVIRONMENT", "production")
    mark_development(tmp_path)
    assert CliRunner().invoke(cli, arguments).exit_code == 2

    monkeypatch.delenv("FLOURISH_ENVIRONMENT")
    issued = CliRunner().invoke(cli, arguments)
    assert issued.exit_code == 0, issued.output
    assert issued.stdout.count(".") == 2  # a JWT
