"""The embedded broker publishes atomically: a consumer racing the producer never sees a partial message."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection, Exchange, Queue

from domain.platform.settings import Settings
from messaging.celery_config import broker_transport_options, broker_url
from messaging.embedded_broker import SCHEME


def test_plain_filesystem_url_uses_the_atomic_transport(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, broker_url="filesystem://")
    assert broker_url(settings) == f"{SCHEME}://"
    assert Settings(var_dir=tmp_path, broker_url="amqp://guest@localhost//").broker_url.startswith("amqp")


def test_concurrent_producer_and_consumer_lose_and_corrupt_nothing(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    options = {**broker_transport_options(settings), "polling_interval": 0}
    queue = Queue("race", Exchange("race"), routing_key="race")
    total = 400
    received: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with Connection(broker_url(settings), transport_options=options) as conn:
                simple = conn.SimpleQueue(queue)
                while len(received) < total:
                    message = simple.get(block=True, timeout=10)
                    received.append(message.payload["n"])
                    message.ack()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    with Connection(broker_url(settings), transport_options=options) as conn:
        conn.SimpleQueue(queue).close()  # declare the binding once, before the race this test is about
    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection(broker_url(settings), transport_options=options) as conn:
        producer = conn.SimpleQueue(queue)
        for n in range(total):
            producer.put({"n": n, "padding": "x" * 2000})
    consumer.join(60)
    assert not errors, errors
    assert sorted(received) == list(range(total))


def test_concurrent_declarations_of_one_exchange_keep_every_binding(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    options = broker_transport_options(settings)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def declare(n: int) -> None:
        try:
            with Connection(broker_url(settings), transport_options=options) as conn:
                barrier.wait(10)
                Queue(f"q{n}", Exchange("shared"), routing_key=f"q{n}")(conn.default_channel).declare()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=declare, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    with Connection(broker_url(settings), transport_options=options) as conn:
        table = conn.default_channel.get_table("shared")
    assert sorted(binding.queue for binding in table) == [f"q{n}" for n in range(8)]
