"""Engines and sessions. One URL in configuration; sync (workers, CLI) and async (API) flavours from it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import asyncpg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from domain.platform import embedded_postgres
from domain.platform.settings import Settings, get_settings, is_postgres_url

# What "the database cannot serve this now" raises: the driver's error, or a plain OSError for a refused connection
# (a connect timeout, or no answer to a statement, is a TimeoutError, an OSError too); a pooled connection the
# server ended (restart, termination) fails with an InterfaceError, through SQLAlchemy or on the driver directly
# (the prepared-statement path); a statement the server cancelled at its timeout is a QueryCanceledError; no
# pooled connection coming free in time is the pool's TimeoutError; a server out of disk, memory or connections
# raises an InsufficientResourcesError; a connection left mid-operation by a server that went away, an
# InternalClientError on its next use.
CONNECTION_FAILURES = (OperationalError, OSError, InterfaceError, asyncpg.InterfaceError,
                       asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
                       asyncpg.CannotConnectNowError, asyncpg.QueryCanceledError, asyncpg.InsufficientResourcesError,
                       asyncpg.InternalClientError, PoolTimeout)
# How much longer than the server's statement timeout the API waits for an answer before it takes the server for
# silent: time for the server's own cancellation to arrive.
SILENT_SERVER_GRACE_SECONDS = 1.0

SYNC_DRIVER = "postgresql+psycopg"
ASYNC_DRIVER = "postgresql+asyncpg"


def database_url(settings: Settings) -> str:
    """KEYMETA_DATABASE_URL, or the embedded server's URL (started first when it is not running)."""
    return settings.database_url or embedded_postgres.ensure_running(settings.var_dir)


def _with_driver(url: str, driver: str) -> URL:
    if not is_postgres_url(url):
        raise ValueError(f"unsupported database URL scheme {url.partition('://')[0]!r} (use postgresql://)")
    return make_url(url).set(drivername=driver)


def sync_url(url: str) -> URL:
    return _with_driver(url, SYNC_DRIVER)


def async_url(url: str) -> URL:
    return _with_driver(url, ASYNC_DRIVER)


def make_sync_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    # Room for a thread-pool worker (the webhook worker runs 16 task threads, each wanting a connection) with
    # every connection kept: one opened past pool_size is closed on return, and reconnecting on each task
    # (a new server process, authentication) cost more than the task. Connections are opened only when used.
    return create_engine(sync_url(database_url(settings)), pool_pre_ping=True, pool_size=24, max_overflow=8)


def make_async_engine(settings: Settings | None = None) -> AsyncEngine:
    settings = settings or get_settings()
    # Autocommit: the API's writes are single atomic statements, so BEGIN/COMMIT would only add round trips
    # (and a pre-ping on a transactional connection costs BEGIN; ROLLBACK on every checkout).
    # No overflow: connections opened past the pool size are closed on return, and that churn (connect,
    # TLS probe, auth) costs more than letting a request wait a moment for a pooled connection.
    # No pre-ping: it is a round trip (and an event-loop suspension) on every request. A connection that
    # died is invalidated by the error it raises (that request gets a 503) and recycled after 30 minutes.
    # A bounded connect: asyncpg would wait 60 s for a server that does not answer; the request gets its 503 now.
    # Bounded statements: the server cancels (and rolls back) one that runs too long, so nothing was decided;
    # the client gives up a little later only on a server that stopped answering, whose outcome is unknown.
    statement_timeout = settings.database_statement_timeout_seconds
    server_settings = {"statement_timeout": f"{statement_timeout * 1000:.0f}"}  # milliseconds
    return create_async_engine(async_url(database_url(settings)), pool_size=settings.api_db_pool_size,
                               max_overflow=0, pool_pre_ping=False, pool_recycle=1800,
                               pool_timeout=statement_timeout, isolation_level="AUTOCOMMIT",
                               connect_args={"timeout": settings.database_connect_timeout_seconds,
                                             "command_timeout": statement_timeout + SILENT_SERVER_GRACE_SECONDS,
                                             "server_settings": server_settings})


@lru_cache(maxsize=1)
def sync_engine() -> Engine:
    return make_sync_engine()


@lru_cache(maxsize=1)
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=sync_engine(), expire_on_commit=False)


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """The caller (a CLI command, a task) owns the transaction: commit on success, roll back on error."""
    session = _session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engines() -> None:
    """Forget cached engines (tests switch databases; forked workers must not share sockets)."""
    if _session_factory.cache_info().currsize:
        sync_engine().dispose()
    _session_factory.cache_clear()
    sync_engine.cache_clear()


async def run_prepared(conn: AsyncConnection, method: str, sql: str, *params: Any) -> Any:
    """``fetch``/``fetchrow``/``fetchval`` of a fixed statement on the asyncpg connection under ``conn``, through
    asyncpg's prepared-statement cache (the hot paths' statements cost less there than through SQLAlchemy). A
    connection the error closed is invalidated, as SQLAlchemy's own execute would, so the pool never reuses it."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    try:
        return await getattr(driver, method)(sql, *params)
    except Exception as exc:
        # A connection that failed (or timed out) mid-statement is in no state to serve another one.
        if driver is not None and (driver.is_closed() or is_connection_failure(exc)):
            await conn.invalidate()
        raise


def is_connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot serve now, not that one statement was refused. SQLAlchemy wraps
    the driver errors it has no class for (a server shutting down, a connection closed mid-statement) in a plain
    ``DBAPIError``: the driver's own error, behind it, decides."""
    if isinstance(exc, CONNECTION_FAILURES):
        return True
    if isinstance(exc, DBAPIError):
        driver_error = exc.orig
        return isinstance(driver_error, CONNECTION_FAILURES) or isinstance(
            getattr(driver_error, "__cause__", None), CONNECTION_FAILURES)
    return False
