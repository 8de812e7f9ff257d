"""What the crash test found: after PostgreSQL restarts, "the database system is starting up"
reached consumers as a plain DBAPIError that was not taken for a transient failure, so events were
dead-lettered (and lost to the read model) instead of waited for."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError

from shared.store.db import is_transient

DBAPI = AsyncAdapt_asyncpg_dbapi(asyncpg)


def wrapped(error: Exception) -> DBAPIError:
    """The error as SQLAlchemy's asyncpg dialect hands it to us."""
    return DBAPIError.instance("SELECT 1", None, DBAPI.Error(str(error), error), DBAPI.Error)


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
], ids=lambda e: type(e).__name__)
def test_a_server_restarting_under_a_consumer_is_transient(error: Exception) -> None:
    assert is_transient(wrapped(error))


def test_a_failure_of_the_message_itself_is_not_transient() -> None:
    assert not is_transient(wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key value")))
    assert not is_transient(wrapped(asyncpg.exceptions.DataError("invalid input syntax for type uuid")))
