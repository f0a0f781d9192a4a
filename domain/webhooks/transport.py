"""One webhook POST over a kept-alive connection to a vetted address: no redirects, bounded in time and bytes.

Every attempt vets the URL's host again (``ssrf.vet``) and uses only connections opened to that vetted
address (one idle list per scheme, host, port and address), so a changed DNS answer is judged before any byte
goes out and a connection is never reused for an address that was not vetted this time. The URL keeps its
host name, so the ``Host`` header and TLS SNI/certificate checks use it; only the TCP connect goes to the
vetted address. The whole attempt (DNS included) is capped at ``total_timeout``, every socket read and write
at ``read_timeout``, and at most ``excerpt_bytes`` of the body are read; a response not read to its end
closes its connection. A reused connection the consumer had already closed is retried once on a new one,
within the same attempt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ssl
import time
import typing
from collections import defaultdict
from dataclasses import dataclass

import httpcore
import httpx

from domain.platform.models import utcnow
from domain.webhooks import ssrf

USER_AGENT = "keymeta-webhooks/1"
MAX_ERROR = 500
# An idle connection is closed after this long (consumers commonly drop idle ones after 60 s or more).
KEEPALIVE_SECONDS = 30.0
# Idle connections kept per destination (all endpoints on one host share them); more are closed.
MAX_IDLE_PER_DESTINATION = 256


@dataclass(frozen=True)
class SendLimits:
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    excerpt_bytes: int
    allowed: tuple[ssrf.Network, ...]


@dataclass(frozen=True)
class SendResult:
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    truncated: bool = False
    retry_after: float | None = None
    address: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """One verifying context per process (loading the CA bundle is the slow part)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


class _Stream(httpcore.AsyncNetworkStream):
    """A TCP (or TLS) connection on asyncio's own streams: httpcore's anyio backend costs a cancel scope per
    read and write, a large share of a webhook's CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout() from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout() from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout() from exc
        except (ssl.SSLError, OSError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":  # idle, yet readable: the consumer closed it (or sent garbage)
            return self._reader.at_eof() or self._writer.is_closing()
        if info in ("client_addr", "server_addr"):
            return self._writer.get_extra_info("sockname" if info == "client_addr" else "peername")
        return self._writer.get_extra_info({"ssl_object": "ssl_object", "socket": "socket"}.get(info, info))


async def _open(vetted: ssrf.Vetted, limits: SendLimits) -> httpcore.AsyncNetworkStream:
    """A new TCP (and TLS) stream to the vetted address only; SNI and the certificate check use the host name."""
    try:
        async with asyncio.timeout(limits.connect_timeout):
            reader, writer = await asyncio.open_connection(str(vetted.address), vetted.port)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout() from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    stream = _Stream(reader, writer)
    if vetted.scheme == "https":
        try:
            await stream.start_tls(_tls(), server_hostname=vetted.host, timeout=limits.connect_timeout)
        except BaseException:
            await stream.aclose()
            raise
    return stream


Destination = tuple[str, str, int, str]  # scheme, host, port, vetted address


class Connections:
    """Idle HTTP/1.1 connections per vetted destination, for one event loop.

    A connection is taken by one attempt at a time and returned only if its response was read to the end and
    the consumer did not ask to close it; expired or server-closed ones are dropped when met.
    """

    def __init__(self) -> None:
        self._idle: defaultdict[Destination, list[httpcore.AsyncHTTP11Connection]] = defaultdict(list)
        self.opened = 0  # connections ever opened (for tests and metrics)

    async def take(self, destination: Destination) -> httpcore.AsyncHTTP11Connection | None:
        idle = self._idle.get(destination)
        while idle:
            connection = idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def open(self, vetted: ssrf.Vetted, origin: httpcore.Origin,
                   limits: SendLimits) -> httpcore.AsyncHTTP11Connection:
        stream = await _open(vetted, limits)
        self.opened += 1
        return httpcore.AsyncHTTP11Connection(origin=origin, stream=stream, keepalive_expiry=KEEPALIVE_SECONDS)

    async def give_back(self, destination: Destination, connection: httpcore.AsyncHTTP11Connection) -> None:
        idle = self._idle[destination]
        if connection.is_idle() and len(idle) < MAX_IDLE_PER_DESTINATION:
            idle.append(connection)
        else:
            await connection.aclose()

    def idle_count(self, port: int | None = None) -> int:
        """Idle connections kept (to destinations on ``port`` only, if given)."""
        return sum(len(idle) for destination, idle in self._idle.items() if port in (None, destination[2]))

    async def prune(self) -> None:
        """Close expired idle connections and forget destinations with none left."""
        for destination in list(self._idle):
            keep = []
            for connection in self._idle[destination]:
                if connection.is_idle() and not connection.has_expired():
                    keep.append(connection)
                else:
                    await connection.aclose()
            if keep:
                self._idle[destination] = keep
            else:
                del self._idle[destination]

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                await connection.aclose()
        self._idle.clear()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 1] + "…"


def excerpt_text(data: bytes) -> str:
    """Stored as text on every backend: invalid UTF-8 and NUL (PostgreSQL text refuses it) become U+FFFD."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _describe(exc: Exception) -> str:
    kinds: dict[type[Exception], str] = {
        httpcore.ConnectTimeout: "connect timeout",
        httpcore.ReadTimeout: "read timeout",
        httpcore.WriteTimeout: "write timeout",
        httpcore.PoolTimeout: "timeout",
        httpcore.ConnectError: "connection failed",
        httpcore.ReadError: "read failed",
        httpcore.WriteError: "write failed",
        httpcore.RemoteProtocolError: "invalid HTTP response",
        httpcore.LocalProtocolError: "invalid request",
        httpcore.UnsupportedProtocol: "unsupported protocol",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    detail = str(exc)
    return _clip(f"{kind}: {detail}" if detail else kind)


# What a consumer's earlier close of a kept-alive connection looks like to the next request on it.
_STALE_ERRORS = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)


@dataclass
class _Exchange:
    """What one attempt has seen so far (kept when the total cap cuts it short)."""

    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    truncated: bool = False

    def __post_init__(self) -> None:
        self.received = bytearray()


async def _vet(parsed: httpx.URL, port: int, limits: SendLimits) -> ssrf.Vetted:
    if ssrf.literal_address(parsed.host) is not None:
        return ssrf.vet(parsed.scheme, parsed.host, port, limits.allowed, timeout=limits.connect_timeout)
    # Resolving blocks: off the event loop.
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: ssrf.vet(parsed.scheme, parsed.host, port, limits.allowed, timeout=limits.connect_timeout))


async def _exchange(connections: Connections, destination: Destination, vetted: ssrf.Vetted,
                    request: httpcore.Request, limits: SendLimits, seen: _Exchange) -> None:
    connection = await connections.take(destination)
    reused = connection is not None
    if connection is None:
        connection = await connections.open(vetted, request.url.origin, limits)
    try:
        response = await connection.handle_async_request(request)
    except _STALE_ERRORS:
        if not reused:
            raise
        # The consumer closed this idle connection as we reused it: once more on a new connection.
        await connection.aclose()
        connection = await connections.open(vetted, request.url.origin, limits)
        response = await connection.handle_async_request(request)
    finished = False
    try:
        seen.status = response.status
        headers = httpx.Headers(response.headers)
        if seen.status in (429, 503):
            seen.retry_after = parse_retry_after(headers.get("retry-after"))
        if 300 <= seen.status < 400:
            seen.error = f"redirect not followed (Location: {headers.get('location', '-')})"
        finished = True
        async for chunk in response.aiter_stream():
            room = limits.excerpt_bytes - len(seen.received)
            seen.received += chunk[:room]
            if len(chunk) > room:
                seen.truncated = True
                finished = False  # the rest is never read: this connection cannot carry another request
                break
    except BaseException:
        finished = False
        raise
    finally:
        if finished:
            await response.aclose()
            await connections.give_back(destination, connection)
        else:
            await connection.aclose()


async def post(connections: Connections, url: str, headers: dict[str, str], body: bytes,
               limits: SendLimits) -> SendResult:
    """POST once; never raises. Every outcome, including refusals and timeouts, is a SendResult."""
    started_at = utcnow()
    clock = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - clock) * 1000)

    seen = _Exchange()
    vetted: ssrf.Vetted | None = None
    try:
        async with asyncio.timeout(limits.total_timeout):
            try:
                parsed = httpx.URL(url)
                port = parsed.port or (443 if parsed.scheme == "https" else 80)
                vetted = await _vet(parsed, port, limits)
            except ssrf.AddressRefused as exc:
                return SendResult(started_at, elapsed_ms(), error=_clip(f"address refused: {exc}"))
            except httpx.InvalidURL as exc:
                return SendResult(started_at, elapsed_ms(), error=_clip(f"cannot send: {exc}"))
            request_headers = [(b"Host", parsed.netloc), (b"User-Agent", USER_AGENT.encode()),
                               (b"Content-Type", b"application/json"), (b"Accept-Encoding", b"identity"),
                               (b"Content-Length", str(len(body)).encode())]
            request_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
            timeouts = {"connect": limits.connect_timeout, "read": limits.read_timeout,
                        "write": limits.read_timeout, "pool": limits.connect_timeout}
            target = httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=port, target=parsed.raw_path)
            request = httpcore.Request(b"POST", target, headers=request_headers, content=body,
                                       extensions={"timeout": timeouts})
            destination = (vetted.scheme, vetted.host, vetted.port, str(vetted.address))
            await _exchange(connections, destination, vetted, request, limits, seen)
    except TimeoutError:
        described = f"total time cap of the attempt exceeded ({limits.total_timeout:g} s)"
        seen.error = described if seen.status is None else _clip(
            f"{seen.error + '; ' if seen.error else ''}body: {described}")
    except Exception as exc:  # noqa: BLE001 - any failure is a recorded attempt, never a stuck worker
        described = _describe(exc)
        seen.error = described if seen.status is None else _clip(
            f"{seen.error + '; ' if seen.error else ''}body: {described}")
    return SendResult(started_at, elapsed_ms(), status_code=seen.status,
                      error=_clip(seen.error) if seen.error else None,
                      excerpt=excerpt_text(bytes(seen.received)) if seen.received or seen.status is not None else None,
                      truncated=seen.truncated, retry_after=seen.retry_after,
                      address=str(vetted.address) if vetted is not None else None)
