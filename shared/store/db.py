"""Database engines: one async SQLAlchemy engine per service, on asyncpg."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import Settings


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    size = pool_size or settings.db_pool_size
    return create_async_engine(
        settings.database_url,
        pool_size=size,
        max_overflow=size,
        pool_pre_ping=True,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
    )


def is_transient(error: BaseException) -> bool:
    """True for failures of the database or network rather than of the message: waiting and
    trying again will fix them, so they must never send a message to the dead-letter topic."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(error, (OSError, ConnectionError, TimeoutError, InterfaceError, OperationalError)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    name = type(error).__name__
    # asyncpg's own connection errors, when they surface unwrapped.
    return name in {"ConnectionDoesNotExistError", "CannotConnectNowError", "TooManyConnectionsError"}
