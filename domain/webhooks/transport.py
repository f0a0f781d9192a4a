"""One webhook POST: pinned to a vetted address, no redirects, bounded in time and in bytes read.

The URL keeps its host name, so the ``Host`` header and TLS SNI/certificate checks use it; only the TCP
connect goes to the address ``ssrf.vet`` approved (a custom httpcore network backend). Every socket
operation gets ``min(its timeout, time left)``, so a consumer dripping bytes (slow loris) is cut off at the
attempt's total-time cap, and at most ``excerpt_bytes`` of the body are ever read.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ssl
import time
import typing
from dataclasses import dataclass

import httpcore
import httpx

from domain.platform.models import utcnow
from domain.webhooks import ssrf

USER_AGENT = "keymeta-webhooks/1"
MAX_ERROR = 500


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


class _Deadline:
    def __init__(self, total: float) -> None:
        self.end = time.monotonic() + total

    def bound(self, timeout: float | None, exc: type[Exception]) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise exc("total time cap of the attempt exceeded")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      self._deadline.bound(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects only to the vetted address, whatever host name the request carries."""

    def __init__(self, vetted: ssrf.Vetted, deadline: _Deadline) -> None:
        self._vetted = vetted
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        if port != self._vetted.port:
            raise httpcore.ConnectError(f"refusing to connect to unvetted port {port}")
        stream = self._inner.connect_tcp(str(self._vetted.address), port,
                                         self._deadline.bound(timeout, httpcore.ConnectTimeout),
                                         local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook destinations")


_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """One verifying context per process (loading the CA bundle is the slow part)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


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
    kind = {
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
    }.get(type(exc), type(exc).__name__)
    detail = str(exc)
    return _clip(f"{kind}: {detail}" if detail else kind)


def post(url: str, headers: dict[str, str], body: bytes, limits: SendLimits) -> SendResult:
    """POST once; never raises. Every outcome, including refusals and timeouts, is a SendResult."""
    started_at = utcnow()
    clock = time.monotonic()
    deadline = _Deadline(limits.total_timeout)

    def elapsed_ms() -> int:
        return int((time.monotonic() - clock) * 1000)

    try:
        parsed = httpx.URL(url)
        scheme = parsed.scheme
        port = parsed.port or (443 if scheme == "https" else 80)
        vetted = ssrf.vet(scheme, parsed.host, port, limits.allowed,
                          timeout=deadline.bound(limits.connect_timeout, httpcore.ConnectTimeout))
    except ssrf.AddressRefused as exc:
        return SendResult(started_at, elapsed_ms(), error=_clip(f"address refused: {exc}"))
    except (httpx.InvalidURL, httpcore.TimeoutException) as exc:
        return SendResult(started_at, elapsed_ms(), error=_clip(f"cannot send: {exc}"))

    request_headers = [(b"Host", parsed.netloc), (b"User-Agent", USER_AGENT.encode()),
                       (b"Content-Type", b"application/json"), (b"Accept-Encoding", b"identity"),
                       (b"Connection", b"close")]
    request_headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    timeouts = {"connect": limits.connect_timeout, "read": limits.read_timeout,
                "write": limits.read_timeout, "pool": limits.connect_timeout}
    target = httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=port, target=parsed.raw_path)
    status: int | None = None
    retry_after: float | None = None
    received = bytearray()
    truncated = False
    error: str | None = None
    try:
        with httpcore.ConnectionPool(ssl_context=_tls(), max_connections=1,
                                     max_keepalive_connections=0,
                                     network_backend=PinnedBackend(vetted, deadline)) as pool, \
                pool.stream("POST", target, headers=request_headers, content=body,
                            extensions={"timeout": timeouts, "sni_hostname": parsed.host}) as response:
            status = response.status
            response_headers = httpx.Headers(response.headers)
            if status in (429, 503):
                retry_after = parse_retry_after(response_headers.get("retry-after"))
            if 300 <= status < 400:
                error = f"redirect not followed (Location: {response_headers.get('location', '-')})"
            for chunk in response.iter_stream():
                room = limits.excerpt_bytes - len(received)
                received += chunk[:room]
                if len(chunk) > room:
                    truncated = True
                    break
    except Exception as exc:  # noqa: BLE001 - any failure is a recorded attempt, never a stuck worker
        described = _describe(exc)
        if isinstance(exc, httpcore.TimeoutException) and time.monotonic() >= deadline.end - 0.01:
            described = f"total time cap of the attempt exceeded ({limits.total_timeout:g} s)"
        error = described if status is None else _clip(f"{error + '; ' if error else ''}body: {described}")
    return SendResult(started_at, elapsed_ms(), status_code=status, error=_clip(error) if error else None,
                      excerpt=excerpt_text(bytes(received)) if received or status is not None else None,
                      truncated=truncated, retry_after=retry_after, address=str(vetted.address))
