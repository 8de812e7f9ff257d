"""`flourish`: the operators' command line: the local stack, the platform, dev tokens, demo data.

The composition mounts the commands each service contributes (`flourish audit`, `flourish
reporting`) beside its own (`infra`, `platform`, `admin`, `dev-token`); it is the one place that may.
"""

from __future__ import annotations

import sys

import typer
from opentelemetry import trace

from flourish.cli import admin, infra, kafka, migrate, platform, tokens
from services.reporting.audit import cli as audit_cli
from services.reporting.readmodels import cli as readmodels_cli
from services.reporting.sharing import cli as sharing_cli

app = typer.Typer(help="Operate Flourish: the local stack, the services, tokens and demo data.", no_args_is_help=True)
app.add_typer(infra.app, name="infra")
app.add_typer(kafka.app, name="kafka")
app.add_typer(platform.app, name="platform")
app.add_typer(audit_cli.app, name="audit")
readmodels_cli.app.add_typer(sharing_cli.app, name="sharing")  # flourish reporting sharing ...
app.add_typer(readmodels_cli.app, name="reporting")
app.add_typer(admin.app, name="admin")
app.command("dev-token")(tokens.dev_token)
app.command("migrate")(migrate.migrate)


def main() -> None:
    """Each command runs in a span of its own, so what it records (an `AdminActionTaken` for an
    audit export, say) carries that span's trace like an event caused by a request does."""
    from shared.settings import Settings
    from shared.telemetry import configure_tracing

    settings = Settings()
    configure_tracing("cli", settings.otlp_endpoint, settings.trace_file)
    words = [word for word in sys.argv[1:3] if not word.startswith("-")]  # command names, never values
    with trace.get_tracer("flourish.cli").start_as_current_span(" ".join(["flourish", *words]),
                                                               record_exception=False, set_status_on_exception=False):
        app()


if __name__ == "__main__":
    main()
