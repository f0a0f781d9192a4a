"""Which real servers the suite runs against.

SQLite (the embedded default) always; PostgreSQL, RabbitMQ and Redis when their URL is given in
``KEYMETA_TEST_POSTGRES_URL`` / ``KEYMETA_TEST_RABBITMQ_URL`` / ``KEYMETA_TEST_REDIS_URL`` (``.ci/run``
gives all three). A URL that is given but unreachable fails the run; it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("KEYMETA_TEST_POSTGRES_URL", "")
RABBITMQ_URL = os.environ.get("KEYMETA_TEST_RABBITMQ_URL", "")
REDIS_URL = os.environ.get("KEYMETA_TEST_REDIS_URL", "")

DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A database of its own for this test session, dropped afterwards (parallel runs never collide)."""
    import psycopg

    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql")
    name = f"keymeta_test_{uuid.uuid4().hex[:12]}"
    dsn = admin_url.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
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
