"""Which errors mean "the database cannot be reached" (every write of a batch fails alike) and which do not."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import OperationalError

from domain.platform.database import is_connection_failure


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("connect timed out"),
    OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
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
