"""Which errors mean "the database cannot serve now" (every write of a batch fails alike, the answer is a 503) and
which do not."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from domain.platform.database import is_connection_failure


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("connect timed out"),
    OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.DiskFullError("could not extend file: No space left on device"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
])
def test_a_lost_or_refused_connection_is_a_connection_failure(error: BaseException) -> None:
    assert is_connection_failure(error)


@pytest.mark.parametrize("error", [
    asyncpg.UniqueViolationError("duplicate key value"),
    asyncpg.DeadlockDetectedError("deadlock detected"),
    asyncpg.DataError("invalid input"),
    ValueError("a bad row"),
])
def test_an_error_of_one_statement_is_not(error: BaseException) -> None:
    assert not is_connection_failure(error)


def _wrapped(driver_error: Exception) -> DBAPIError:
    """As SQLAlchemy's asyncpg dialect raises a driver error it has no class for: its adapter's error, caused by
    the driver's, inside a plain DBAPIError."""
    adapted = Exception(str(driver_error))
    adapted.__cause__ = driver_error
    return DBAPIError("SELECT 1", None, adapted)


def test_a_wrapped_driver_error_is_judged_by_the_driver_error_behind_it() -> None:
    assert is_connection_failure(_wrapped(asyncpg.CannotConnectNowError("the database system is shutting down")))
    assert is_connection_failure(DBAPIError("SELECT 1", None, asyncpg.ConnectionDoesNotExistError("closed")))
    assert not is_connection_failure(_wrapped(asyncpg.UniqueViolationError("duplicate key value")))
    assert not is_connection_failure(DBAPIError("SELECT 1", None, ValueError("a bad row")))
