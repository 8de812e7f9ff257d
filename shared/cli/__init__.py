"""`flourish`: the operators' command line: the local stack, the platform, dev tokens, demo data."""

from __future__ import annotations

import sys

import typer

from services.reporting.readmodels import cli as reporting_cli
from shared.cli import audit, infra, platform, tokens

app = typer.Typer(help="Operate Flourish: the local stack, the services, tokens and demo data.", no_args_is_help=True)
app.add_typer(infra.app, name="infra")
app.add_typer(platform.app, name="platform")
app.add_typer(audit.app, name="audit")
app.add_typer(reporting_cli.app, name="reporting")
app.command("dev-token")(tokens.dev_token)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
