"""Database engines: one async SQLAlchemy engine per service, on asyncpg."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import Settings
from shared.tenancy import scope_transactions


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    size = pool_size or settings.db_pool_size
    engine = create_async_engine(
        settings.database_url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=True,
        # A failed statement's parameters are pupils' names and notes: keep them out of the
        # exception text, which reaches logs.
        hide_parameters=True,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
    )
    # Row-level security: a transaction in an HTTP request sees only its caller's trust.
    scope_transactions(engine)
    return engine


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
