"""Routes only Flourish services call, and only the services that need them (issue 17).

Two refusals, each answered as a problem, counted on `flourish_security_refusals_total{kind}` and,
when the caller's token is valid (so their trust is known), recorded as an `AccessRefused` audit
fact — the caller's pseudonymous subject and client, the route template, the pupil's id; no
personal data:

* `INTERNAL` (a route dependency, `dependencies=[INTERNAL]`): an internal route answers only on
  the cluster network. A request that carries a header the ingress controller always sets is
  refused with 404, as if the route did not exist: ingress-nginx sets `X-Forwarded-Host` and
  `X-Real-IP` on every proxied request with `proxy_set_header`, which replaces whatever the client
  sent, so a client can neither forge their absence nor remove them. (`X-Request-ID` and
  `X-Forwarded-For` are not used: a service mesh's sidecar adds them to pod-to-pod calls too.)
  This is defence in depth beside the ingress's own path allow-list (deploy/k8s), which is built
  from `INTERNAL_ROUTES`.
* `service_client(allowed)`: a `service` principal whose client (`Principal.client`, from the
  token's client_id) is not among the services the route answers is refused with 403, nothing
  released (the consent service's data key: only the services that seal or open pupils' data).

`INTERNAL_ROUTES` is the one list of internal routes, per service (method, path template);
tests/integration/identities checks it is exactly the routes marked `INTERNAL`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.api import requires
from shared.audit import record_audit
from shared.auth import Principal, Role
from shared.events.audit import AccessRefused, RefusalKind
from shared.problems import Forbidden, NotFound, Problem
from shared.telemetry import security_refusals
from shared.tenancy import enter_scope

__all__ = ["INGRESS_HEADERS", "INTERNAL", "INTERNAL_ROUTES", "internal_only", "service_client"]

log = logging.getLogger(__name__)

# Headers ingress-nginx sets on every request it proxies, whatever the client sent.
INGRESS_HEADERS: tuple[str, ...] = ("x-forwarded-host", "x-real-ip")

# Every internal route, per service: what the ingress must never route (deploy/k8s), and what
# refuses a request that came through it anyway. GET /pupils/{pupil_id}/family-contact is
# internal; its PUT and DELETE are staff's (public).
INTERNAL_ROUTES: dict[str, frozenset[tuple[str, str]]] = {
    "consent": frozenset({
        ("GET", "/pupils/{pupil_id}/data-key"),
        ("GET", "/pupils/{pupil_id}/family-contact"),
        ("GET", "/sharing-decisions"),
        ("PUT", "/pupils/{pupil_id}/retention-clock"),
    }),
    "assessment": frozenset({
        ("GET", "/pupils/{pupil_id}/attributes"),
        # Each service's part of a subject-access export: gathered by consent's public route.
        ("GET", "/pupils/{pupil_id}/subject-access"),
    }),
    "planning": frozenset({("GET", "/pupils/{pupil_id}/subject-access")}),
    "reporting": frozenset({("GET", "/pupils/{pupil_id}/subject-access")}),
}

_bearer = HTTPBearer(auto_error=False, bearerFormat="JWT")


async def internal_only(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """The dependency that makes a route internal: 404 when the request came through the ingress."""
    if not any(header in request.headers for header in INGRESS_HEADERS):
        return
    principal = None
    if credentials is not None:
        try:
            principal = await run_in_threadpool(request.app.state.runtime.auth.verifier.verify, credentials.credentials)
        except Problem:
            principal = None  # no trust to record it under: counted only
    await refuse(request, RefusalKind.INTERNAL_PATH_VIA_INGRESS, principal)
    raise NotFound("no such route")


INTERNAL = Depends(internal_only)


def service_client(allowed: Callable[[Request], Collection[str]]) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the `service` caller, if their client is one of `allowed(request)` (the
    service names a setting lists); 403 otherwise, recorded and counted."""

    async def with_client(request: Request, principal: Annotated[Principal, Depends(requires(Role.service))]) -> Principal:
        if principal.client not in allowed(request):
            await refuse(request, RefusalKind.CLIENT_NOT_ALLOWED, principal)
            raise Forbidden("this service client may not ask for this")
        return principal

    return with_client


async def refuse(request: Request, kind: RefusalKind, principal: Principal | None) -> None:
    """Count a refusal; record it in the audit ledger under the caller's trust when they are known.
    A refusal that cannot be recorded (the database is down) is still refused, and logged."""
    security_refusals.labels(kind=kind.value).inc()
    if principal is None:
        log.warning("request refused", extra={"refusal": kind.value})
        return
    route = getattr(request.scope.get("route"), "path", None) or "unmatched"
    fact = AccessRefused(refusal=kind.value, actor=principal.subject, client=principal.client, route=route,
                         method=request.method.lower(), pupil_id=_pupil_of(request), refused_at=datetime.now(UTC))
    runtime = request.app.state.runtime
    enter_scope(principal.trust_id)
    try:
        async with runtime.engine.begin() as conn:
            await record_audit(conn, runtime.store, fact, trust_id=principal.trust_id)
    except Exception:
        log.warning("could not record a refused request", extra={"refusal": kind.value}, exc_info=True)


def _pupil_of(request: Request) -> UUID | None:
    raw = request.path_params.get("pupil_id") or request.query_params.get("pupil_id")
    try:
        return UUID(str(raw)) if raw else None
    except ValueError:
        return None
