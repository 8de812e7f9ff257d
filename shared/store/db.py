"""Database engines: one async SQLAlchemy engine per service, on asyncpg."""

from __future__ import annotations

import ssl
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import Settings
from shared.tenancy import scope_transactions


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# libpq's TLS parameters, as DATABASE_URL carries them (`?sslmode=verify-full&sslrootcert=/ca.crt`).
# SQLAlchemy's asyncpg dialect hands a URL's query to asyncpg.connect() as keywords, which has
# `ssl` but no `sslmode` or `sslrootcert`: they become one SSLContext here.
_TLS_PARAMETERS = ("sslmode", "ssl", "sslrootcert", "sslcert", "sslkey")
_VERIFYING = ("verify-ca", "verify-full")


def tls_connect_args(database_url: str) -> tuple[URL, dict[str, Any]]:
    """The URL without libpq's TLS parameters, and asyncpg's `ssl` argument they mean. A mode
    that verifies (verify-ca, verify-full) with a root certificate: a context that trusts that CA
    only, and for verify-full checks the server's host name; other modes go to asyncpg as they are."""
    url = make_url(database_url)
    query = {key: (value if isinstance(value, str) else value[-1]) for key, value in url.query.items()}
    if not any(key in query for key in _TLS_PARAMETERS):
        return url, {}
    stripped = url.difference_update_query(_TLS_PARAMETERS)
    mode = query.get("sslmode", query.get("ssl"))
    if mode in _VERIFYING and query.get("sslrootcert"):
        context = ssl.create_default_context(cafile=query["sslrootcert"])
        context.check_hostname = mode == "verify-full"
        if query.get("sslcert"):
            context.load_cert_chain(query["sslcert"], query.get("sslkey"))
        return stripped, {"ssl": context}
    return stripped, ({"ssl": mode} if mode else {})


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    size = pool_size or settings.db_pool_size
    url, connect_args = tls_connect_args(settings.database_url)
    engine = create_async_engine(
        url,
        connect_args=connect_args,
        pool_size=size,
        max_overflow=size,
        # No ping per checkout (a round trip on every request): connections are recycled, and one
        # the server closed under us (a restart, a terminated backend) is found closed without a
        # round trip at checkout and replaced (`_replace_closed`).
        pool_recycle=settings.db_pool_recycle_s,
        # A failed statement's parameters are pupils' names and notes: keep them out of the
        # exception text, which reaches logs.
        hide_parameters=True,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
    )
    event.listen(engine.sync_engine.pool, "checkout", _replace_closed)
    # Row-level security: a transaction in an HTTP request sees only its caller's trust.
    scope_transactions(engine)
    return engine


def _replace_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection whose socket the server closed (asyncpg saw the EOF) is not handed
    out: the pool drops it and checks out another, up to three times, then connects afresh.
    A connection dead without the socket saying so fails its first statement instead, as a
    transient error (`is_transient`): the pool is invalidated and the caller tries again."""
    driver = getattr(dbapi_connection, "_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


# Server states that pass: shut down under us (57P01/57P02), starting up after a restart
# (57P03), too many connections (53300); and any connection exception (class 08).
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_transient(error: BaseException) -> bool:
    """True for failures of the database or network rather than of the message: waiting and
    trying again will fix them, so they must never send a message to the dead-letter topic."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(error, (OSError, ConnectionError, TimeoutError, InterfaceError, OperationalError)):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        # SQLAlchemy wraps asyncpg's errors in a plain DBAPIError: its SQLSTATE says.
        sqlstate = str(getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None) or "")
        if sqlstate.startswith("08") or sqlstate in TRANSIENT_SQLSTATES:
            return True
        error = error.orig.__cause__ or error.orig if error.orig is not None else error
    name = type(error).__name__
    # asyncpg's own connection errors, when they surface unwrapped.
    return name in {"ConnectionDoesNotExistError", "CannotConnectNowError", "TooManyConnectionsError"}
