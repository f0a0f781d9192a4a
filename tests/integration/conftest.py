"""Stacks of real servers and processes, each on a fresh PostgreSQL database: the embedded (filesystem) broker,
RabbitMQ, Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from domain.platform.database import reset_engines
from domain.platform.settings import get_settings
from tests.backends import RABBITMQ_URL, REDIS_URL, fresh_postgres_database
from tests.conftest import configure
from tests.processes import Stack, TcpProxy

# Parameters: the broker of the stack.
EMBEDDED = pytest.param("embedded", id="embedded")
REAL = ([pytest.param("rabbitmq", id="postgres-rabbitmq")] if RABBITMQ_URL else []) \
    + ([pytest.param("redis", id="postgres-redis")] if REDIS_URL else [])
ALL_STACKS = [EMBEDDED, *REAL]


class BrokerStack(Stack):
    proxy: TcpProxy | None = None


def _broker_url(kind: str) -> str:
    return {"rabbitmq": RABBITMQ_URL, "redis": REDIS_URL}[kind]


def make_stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               master_key_text: str) -> Iterator[BrokerStack]:
    broker = request.param
    with fresh_postgres_database() as database_url:
        extra = {"KEYMETA_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:8]}_", "KEYMETA_SWEEP_GRACE_SECONDS": "1",
                 "KEYMETA_SWEEP_INTERVAL_SECONDS": "0.5", "KEYMETA_LOG_LEVEL": "INFO"}
        proxy = None
        if broker != "embedded":
            # Clients reach the broker through a proxy the fault tests can cut.
            url = _broker_url(broker)
            host_port = _host_port(url, default_port=5672 if broker == "rabbitmq" else 6379)
            proxy = TcpProxy(*host_port)
            extra["KEYMETA_BROKER_URL"] = url.replace(f"{host_port[0]}:{host_port[1]}", f"127.0.0.1:{proxy.port}")
        configure(monkeypatch, database_url, master_key_text, tmp_path / "var", **extra)
        stack = BrokerStack(env=dict(os.environ), log_dir=tmp_path)
        stack.proxy = proxy
        try:
            yield stack
        finally:
            stack.stop_all()
            if proxy is not None:
                proxy.close()
            _delete_queues(broker, extra["KEYMETA_QUEUE_PREFIX"])
            reset_engines()
            get_settings.cache_clear()


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _delete_queues(broker: str, prefix: str) -> None:
    if broker == "embedded":
        return
    from kombu import Connection

    with Connection(_broker_url(broker), connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in ("audit", "webhooks", "keys", "sweep"):
            try:
                channel.queue_delete(prefix + queue)
            except Exception:  # the queue may never have been declared
                channel = conn.channel()


@pytest.fixture(params=ALL_STACKS)
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          master_key_text: str) -> Iterator[BrokerStack]:
    yield from make_stack(request, tmp_path, monkeypatch, master_key_text)


@pytest.fixture(params=REAL)
def real_stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               master_key_text: str) -> Iterator[BrokerStack]:
    yield from make_stack(request, tmp_path, monkeypatch, master_key_text)
