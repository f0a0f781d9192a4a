"""The embedded broker: kombu's filesystem transport, made safe for several producers and consumers.

kombu's own ``_put`` creates the message file under its final name and only then writes it, while a
consumer polling the folder may already move it away: it then reads an empty file and the worker dies on
the JSON error (seen under load). Here a message is written under a temporary name in a staging folder on
the same file system and renamed into place, so a consumer only ever sees complete messages.

The same holds for an exchange's binding table: kombu creates it with ``open("wb")`` and locks it only
afterwards, so a process declaring the same queue at that moment (API and workers start together) reads an
empty table. Here the table is first created complete (``[]``) with an atomic link, and kombu's locked
read-modify-write then always applies.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "keymeta-fs"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        staging = self.transport_options.get("staging_folder") or self.data_folder_out
        temporary = os.path.join(staging, f".{name}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, os.path.join(self.data_folder_out, name))  # atomic on one file system
        except OSError as exc:
            raise filesystem.ChannelError(f"cannot add message {name!r} to the queue folder") from exc


    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        table = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        if not table.exists():
            temporary = self.control_folder / f".{uuid.uuid4()}.exchange.tmp"
            temporary.write_bytes(b"[]")
            try:
                os.link(temporary, table)  # fails if another process created it first: theirs stands
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
