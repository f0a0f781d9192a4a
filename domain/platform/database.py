"""Engines and sessions. One URL in configuration; sync (workers, CLI) and async (API) flavours from it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from domain.platform.settings import Settings, get_settings

_SYNC_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg"}
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def _with_driver(url: str, drivers: dict[str, str]) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise ValueError(f"unsupported database backend {backend!r} (use sqlite or postgresql)")
    return parsed.set(drivername=drivers[backend])


def sync_url(url: str) -> URL:
    return _with_driver(url, _SYNC_DRIVERS)


def async_url(url: str) -> URL:
    return _with_driver(url, _ASYNC_DRIVERS)


def _tune_sqlite(engine_sync: Engine) -> None:
    # WAL lets the API read while a worker writes; busy_timeout turns lock contention into waiting.
    # Transactions start with BEGIN IMMEDIATE: a deferred read transaction that later writes fails at
    # once (SQLITE_BUSY) when another writer got in first; an immediate one queues for the lock instead.
    @event.listens_for(engine_sync, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not emit its own BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine_sync, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def ensure_sqlite_dir(url: URL) -> None:
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def make_sync_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    url = sync_url(settings.effective_database_url)
    ensure_sqlite_dir(url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})
        _tune_sqlite(engine)
        return engine
    # Room for a thread-pool worker (the webhook worker runs 16 task threads, each wanting a connection) with
    # every connection kept: one opened past pool_size is closed on return, and reconnecting on each task
    # (a new server process, authentication) cost more than the task. Connections are opened only when used.
    return create_engine(url, pool_pre_ping=True, pool_size=24, max_overflow=8)


def make_async_engine(settings: Settings | None = None) -> AsyncEngine:
    settings = settings or get_settings()
    url = async_url(settings.effective_database_url)
    ensure_sqlite_dir(url)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _tune_sqlite(engine.sync_engine)
        return engine
    # Autocommit: the API's writes are single atomic statements, so BEGIN/COMMIT would only add round trips
    # (and a pre-ping on a transactional connection costs BEGIN; ROLLBACK on every checkout).
    # No overflow: connections opened past the pool size are closed on return, and that churn (connect,
    # TLS probe, auth) costs more than letting a request wait a moment for a pooled connection.
    # No pre-ping: it is a round trip (and an event-loop suspension) on every request. A connection that
    # died is invalidated by the error it raises (that request gets a 503) and recycled after 30 minutes.
    return create_async_engine(url, pool_size=settings.api_db_pool_size, max_overflow=0, pool_pre_ping=False,
                               pool_recycle=1800, isolation_level="AUTOCOMMIT")


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
