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
