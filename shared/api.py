"""What every service's HTTP API shares: the caller, Idempotency-Key on commands, cursor pages."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import Text, cast, delete, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.auth import Principal, Role
from shared.problems import BadRequest, Forbidden, IdempotencyKeyReused
from shared.tenancy import CARRIES_SCOPE, enter_scope, scope_carrier

_log = logging.getLogger(__name__)

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False, description="A JWT from the trust's identity provider")

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


# --- The caller ---------------------------------------------------------------------------------


async def caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The authenticated caller (401 without a valid bearer token); from here on the request's
    database work sees only the caller's trust's rows (shared.tenancy).

    Async so that the scope, a contextvar, is set in the request's own task: a sync dependency
    runs in a worker thread, whose context is thrown away. Not reset here: a streamed body is
    read after the dependencies have exited; TenantScopeMiddleware ends it with the request. A
    token this service verified before comes from its cache (shared/verified_tokens.py) on the
    event loop; a new one is verified in a worker thread (it may fetch the identity provider's keys)."""
    principal: Principal = await request.app.state.runtime.verified_tokens.principal_async(credentials)
    enter_scope(principal.trust_id)
    return principal


def requires(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, if they hold one of the roles (403 otherwise). The caller is
    trust-wide on this route only through a trust role the route accepts: an academy role plus an
    unrelated trust role (practitioner + auditor) keeps them inside their academies."""
    wanted = ", ".join(sorted(roles))

    async def with_role(principal: Annotated[Principal, Depends(caller)]) -> Principal:  # async: no thread hop
        if not principal.has_role(*roles):
            raise Forbidden(f"this requires one of the roles: {wanted}")
        return principal.acting_as(roles)

    return with_role


# --- Idempotency-Key ----------------------------------------------------------------------------

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Send the same key again to retry safely: the first response is returned, nothing happens twice.",
    ),
]

Command = Callable[[AsyncConnection], Awaitable[tuple[int, Any]]]


async def forget_stored_answers(conn: AsyncConnection, idempotency: Any, trust_id: Any, pupil_id: Any) -> None:
    """On a pupil's erasure: every stored command answer (Idempotency-Key) that names the pupil goes.
    An answer may repeat what was sent (a plan's activities, a roster row), so it is a copy of the
    pupil's data like any other; a retry of that command after the erasure runs it afresh (and is
    refused, the pupil being erased)."""
    c = idempotency.c
    await conn.execute(delete(idempotency).where(c.trust_id == trust_id, cast(c.response, Text).contains(str(pupil_id))))


async def forget_old_stored_answers(engine: Any, idempotency: Any, retention_s: float, stop: Any,
                                    *, every_s: float = 600.0) -> None:
    """The kernel's task in every service: stored command answers older than `retention_s` go
    (system scope: every trust's), every `every_s` until `stop` is set."""

    while not stop.is_set():
        try:
            async with engine.begin() as conn:
                cutoff = datetime.now(UTC) - timedelta(seconds=retention_s)
                await conn.execute(delete(idempotency).where(idempotency.c.created_at < cutoff))
        except Exception:  # noqa: BLE001 - a database outage: the next round tries again
            _log.warning("could not forget old stored answers yet", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=min(every_s, retention_s))


# A deadlock (40P01) or a serialisation failure (40001): the server rolled the transaction back
# and says trying again will do; a few tries, a little apart, so two transactions that deadlocked do
# not meet again in the same order.
RETRY_SQLSTATES = frozenset({"40P01", "40001"})
RETRIES_ON_CONFLICT = 3


def _sqlstate(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


async def transact(
    engine: AsyncEngine,
    idempotency: Any,
    principal: Principal,
    key: str | None,
    request_body: Any,
    command: Command,
) -> JSONResponse:
    """`run_command` in a transaction of its own, tried again where the database says it may be:

    * **a connection found dead** (the pool hands out no connection the server has visibly
      closed, but one can die without its socket saying so yet): the transaction is tried once
      more on a fresh connection — when it failed before its COMMIT was sent, for nothing was
      committed then; at the COMMIT only with an Idempotency-Key, whose claim row makes the second
      try answer with the first one's stored response if that one did commit (without a key the
      outcome is unknown, and the error stands rather than apply the command twice);
    * **a deadlock or serialisation failure**: the server rolled everything back; up to
      `RETRIES_ON_CONFLICT` more tries.

    A command's effects are its transaction's (the outbox included), so a retried command runs
    afresh on nothing of the failed try's."""
    dead_retries, conflict_retries = 1, RETRIES_ON_CONFLICT
    while True:
        committing = False
        try:
            async with engine.connect() as conn:
                async with conn.begin():
                    response = await run_command(conn, idempotency, principal, key, request_body, command)
                    committing = True
                return response
        except DBAPIError as error:
            if _sqlstate(error) in RETRY_SQLSTATES and conflict_retries > 0:
                conflict_retries -= 1
                _log.info("transaction rolled back by a %s; trying again", _sqlstate(error))
                await asyncio.sleep(random.uniform(0.005, 0.05))  # noqa: S311 - jitter, not a secret
                continue
            if error.connection_invalidated and dead_retries > 0 and (not committing or key is not None):
                dead_retries -= 1
                _log.warning("a pooled connection was found dead; trying the transaction once more")
                continue
            raise


async def run_command(
    conn: AsyncConnection,
    idempotency: Any,
    principal: Principal,
    key: str | None,
    request_body: Any,
    command: Command,
) -> JSONResponse:
    """Run a command in the caller's transaction, once per Idempotency-Key.

    The key is claimed in the same transaction as the command's effects: a concurrent retry waits
    on the claim, then finds the stored response; a retry after a failure finds nothing stored
    (the failed transaction took the claim with it) and runs the command afresh. Reusing a key for
    a different request is refused rather than silently answered with the old response.
    """
    if key is None:
        status, body = await command(conn)
        return JSONResponse(status_code=status, content=_jsonable(body))
    request_hash = hashlib.sha256(orjson.dumps(_jsonable(request_body), option=orjson.OPT_SORT_KEYS)).hexdigest()
    # The claim is the transaction's first statement and carries its tenant scope (one round trip
    # fewer): the row it inserts is the caller's own, whichever scope checks it.
    scope = scope_carrier()
    c = idempotency.c
    claim = select(
        literal(principal.trust_id, c.trust_id.type), literal(principal.subject, c.subject.type),
        literal(key, c.key.type), literal(request_hash, c.request_hash.type), literal(0, c.status_code.type),
        literal({}, c.response.type),
    ).select_from(scope).where(scope.c.scope.is_not(None))
    claimed = await conn.execute(
        insert(idempotency)
        .from_select(["trust_id", "subject", "key", "request_hash", "status_code", "response"], claim)
        .on_conflict_do_nothing()
        .returning(idempotency.c.key)
        .execution_options(**{CARRIES_SCOPE: True})
    )
    if claimed.first() is None:
        stored = (
            await conn.execute(
                select(idempotency.c.request_hash, idempotency.c.status_code, idempotency.c.response).where(
                    idempotency.c.trust_id == principal.trust_id,
                    idempotency.c.subject == principal.subject,
                    idempotency.c.key == key,
                )
            )
        ).one()
        if stored.request_hash != request_hash:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        return JSONResponse(status_code=stored.status_code, content=stored.response, headers={"Idempotent-Replayed": "true"})
    status, body = await command(conn)
    content = _jsonable(body)
    await conn.execute(
        idempotency.update()
        .where(idempotency.c.trust_id == principal.trust_id, idempotency.c.subject == principal.subject, idempotency.c.key == key)
        .values(status_code=status, response=content)
    )
    return JSONResponse(status_code=status, content=content)


def _jsonable(body: Any) -> Any:
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json")
    return orjson.loads(orjson.dumps(body, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --- Cursor pagination --------------------------------------------------------------------------


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `cursor` for the next one (null at the end)."""

    items: list[T]
    next_cursor: str | None = None


PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page")]
Cursor = Annotated[str | None, Query(max_length=500, description="The next_cursor of the previous page")]


def encode_cursor(position: dict[str, Any]) -> str:
    """An opaque cursor: where the previous page ended (the sort key of its last item)."""
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        position = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise BadRequest("the cursor is not one this API issued") from None
    if not isinstance(position, dict):
        raise BadRequest("the cursor is not one this API issued")
    return position


def cursor_position(cursor: str | None, **fields: Any) -> dict[str, Any] | None:
    """The position a cursor holds, each field parsed as the type given (`observed_at=AwareDatetime,
    observation_id=UUID`); None for the first page. A cursor is base64 JSON a client can forge:
    one without these fields, or with a value of another type, is refused as not one this API
    issued (400), never passed on to a query."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    try:
        return {name: _adapter(kind).validate_python(position[name]) for name, kind in fields.items()}
    except (KeyError, ValidationError):
        raise BadRequest("the cursor is not one this API issued") from None


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def page_of(items: list[T], limit: int, sort_key: Callable[[T], dict[str, Any]]) -> Page[T]:
    """Build a page from up to limit + 1 fetched items (the extra one says whether more exist)."""
    if len(items) > limit:
        items = items[:limit]
        return Page(items=items, next_cursor=encode_cursor(sort_key(items[-1])))
    return Page(items=items, next_cursor=None)
