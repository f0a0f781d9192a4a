"""Which real servers the suite runs against.

PostgreSQL always: the server in ``KEYMETA_TEST_POSTGRES_URL`` when it is set (``.ci/run`` sets it), else
the embedded server of the suite's own var dir (``var/test-postgres``, never the ``var/`` of ``make run``).
Every session works in a fresh database of its own on it, dropped afterwards. RabbitMQ and Redis when their
URL is given in ``KEYMETA_TEST_RABBITMQ_URL`` / ``KEYMETA_TEST_REDIS_URL``. A URL that is given but
unreachable fails the run; it is never skipped.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy.engine import make_url

from domain.platform import embedded_postgres

POSTGRES_URL = os.environ.get("KEYMETA_TEST_POSTGRES_URL", "")
RABBITMQ_URL = os.environ.get("KEYMETA_TEST_RABBITMQ_URL", "")
REDIS_URL = os.environ.get("KEYMETA_TEST_REDIS_URL", "")

TEST_VAR_DIR = Path(__file__).resolve().parent.parent / "var" / "test-postgres"
_USERS_LOCK = TEST_VAR_DIR / "sessions.lock"
_users_fd: int | None = None


@cache
def admin_url() -> str:
    """A PostgreSQL URL allowed to create databases: the CI server, or the suite's embedded server (started,
    and held for this session: the last session to finish stops it, see ``release_embedded_server``)."""
    if POSTGRES_URL:
        return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    global _users_fd
    TEST_VAR_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(_USERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a session that stops the server waits for every holder
        url = embedded_postgres.ensure_running(TEST_VAR_DIR)
    except BaseException:
        os.close(fd)  # a session that could not start the server holds nothing
        raise
    _users_fd = fd
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


def release_embedded_server() -> None:
    """Stop the suite's embedded server unless another test session still uses it."""
    global _users_fd
    if _users_fd is None:
        return
    os.close(_users_fd)
    _users_fd = None
    fd = os.open(_USERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return
    try:
        embedded_postgres.stop(TEST_VAR_DIR)
    finally:
        os.close(fd)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A database of its own for this test session, dropped afterwards (parallel runs never collide)."""
    import psycopg

    name = f"keymeta_test_{uuid.uuid4().hex[:12]}"
    dsn = admin_url()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(dsn).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reachable(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def check_servers(require_all: bool) -> list[str]:
    """Problems with the configured servers (and, when ``require_all``, with missing configuration)."""
    problems = []
    for variable, url, default_port in (("KEYMETA_TEST_POSTGRES_URL", POSTGRES_URL, 5432),
                                        ("KEYMETA_TEST_RABBITMQ_URL", RABBITMQ_URL, 5672),
                                        ("KEYMETA_TEST_REDIS_URL", REDIS_URL, 6379)):
        if not url:
            if require_all:
                problems.append(f"{variable} is not set")
            continue
        parsed = make_url(url.replace("amqp://", "postgresql://", 1).replace("redis://", "postgresql://", 1))
        host, port = parsed.host or "127.0.0.1", parsed.port or default_port
        if not _reachable(host, port):
            problems.append(f"{variable} points at {host}:{port}, which does not answer")
    return problems
