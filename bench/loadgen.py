"""A fixed-rate HTTP/1.1 load generator that costs less CPU per request than the server it drives.

The pipeline bench's client shares the cores with the API and the workers it measures, so every cycle it spends
is taken from them; it therefore speaks just enough HTTP/1.1 over asyncio streams, with no HTTP library:
keep-alive connections from a pool, one request per connection at a time, ``Content-Length`` bodies only
(uvicorn's answers to this endpoint always have one). Connections idle for longer than the server keeps them
(uvicorn: 5 s) are dropped; a reused connection the server closed before answering is retried once on a new one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

IDLE_SECONDS = 4.0  # below uvicorn's keep-alive timeout


class HttpError(RuntimeError):
    pass


class KeepAlivePool:
    def __init__(self, base_url: str, max_connections: int = 64) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"plain http://host:port URLs only, not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._authority = parts.netloc.encode("ascii")
        self._idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def post_form(self, path: str, form: dict[str, str]) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body)."""
        status, payload = await self.post_form_raw(path, form)
        return status, json.loads(payload)

    async def post_form_raw(self, path: str, form: dict[str, str]) -> tuple[int, bytes]:
        """(HTTP status, body as sent)."""
        body = urlencode(form).encode("utf-8")
        head = (b"POST " + path.encode("ascii") + b" HTTP/1.1\r\nHost: " + self._authority
                + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                + str(len(body)).encode("ascii") + b"\r\n\r\n")
        async with self._slots:
            reused = self._reusable()
            reader, writer = reused or await asyncio.open_connection(self._host, self._port)
            try:
                writer.write(head + body)
                status, payload, keep = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                writer.close()
                if reused is None or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
                reader, writer = await asyncio.open_connection(self._host, self._port)  # closed while idle
                writer.write(head + body)
                status, payload, keep = await _read_response(reader)
            except BaseException:
                writer.close()
                raise
            if keep:
                self._idle.append((time.monotonic(), reader, writer))
            else:
                writer.close()
            return status, payload

    def _reusable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        while self._idle:
            since, reader, writer = self._idle.pop()
            if time.monotonic() - since < IDLE_SECONDS:
                return reader, writer
            writer.close()
        return None

    async def close(self) -> None:
        for _, _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:] if line)}
    if "content-length" not in headers:
        raise HttpError("response without Content-Length")
    payload = await reader.readexactly(int(headers["content-length"]))
    return status, payload, headers.get("connection", "").lower() != "close"


async def fixed_rate(rate: float, total: int, send: Callable[[int], Any]) -> None:
    """Request i starts at t0 + i/rate whatever the previous ones are doing (an open loop)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)
