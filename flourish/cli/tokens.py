"""`flourish dev-token`: print a bearer token from the local dev issuer, for curl and scripts."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from uuid import UUID

import typer

from shared.auth import DevIssuer, Role
from shared.settings import Settings


def dev_token(
    role: Annotated[
        list[Role], typer.Option("--role", help="A role to grant; repeat for several.")
    ],
    trust: Annotated[UUID, typer.Option("--trust", help="The trust the caller belongs to.")],
    academy: Annotated[
        list[UUID] | None,
        typer.Option("--academy", help="An academy in scope; repeat for several."),
    ] = None,
    subject: Annotated[
        str, typer.Option("--subject", help="Pseudonymous staff id (the sub claim).")
    ] = "dev-staff",
    ttl_minutes: Annotated[
        int, typer.Option("--ttl-minutes", min=1, help="Minutes until it expires.")
    ] = 60,
    client: Annotated[
        str | None,
        typer.Option("--client", help="The service a `service` token is issued to (its client_id), e.g. reporting."),
    ] = None,
) -> None:
    """Print a bearer token signed by the local dev issuer.

    Only the token goes to stdout, so `TOKEN=$(flourish dev-token ...)` works.
    """
    settings = Settings()
    if settings.environment == "production":
        typer.echo("flourish dev-token refuses in production: tokens come from the trust's identity provider. "
                   "A local checkout is development once `flourish infra up` (make up, make test) has marked "
                   f"{settings.state_dir}, or with FLOURISH_ENVIRONMENT=development.", err=True)
        raise typer.Exit(2)
    if settings.jwks_url:
        # Services verify against the identity provider then, which will not know this key.
        typer.echo("warning: jwks_url is set; services will not accept dev-issuer tokens", err=True)
    token = DevIssuer(settings).issue(
        subject=subject,
        roles=role,
        trust_id=trust,
        academy_ids=academy or [],
        ttl=timedelta(minutes=ttl_minutes),
        client=client,
    )
    typer.echo(token)
