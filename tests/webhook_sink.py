"""A real HTTP server on 127.0.0.1 that records webhook requests and answers from a per-path script."""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before anything is sent
    drip: float = 0.0  # > 0: send the status line byte by byte, this many seconds apart (slow loris)
    stream_bytes: int = 0  # > 0: a body this large, streamed in 64 KiB chunks (huge response)
    hang_up: bool = False  # close the connection without answering (a kept-alive connection timed out)
    close: bool = False  # answer with ``Connection: close`` and close the connection
    http10: bool = False  # answer as an HTTP/1.0 server (no keep-alive)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int = 0  # tells the client's connections apart


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # many concurrent senders: never drop a SYN (a dropped SYN costs 1 s)
    daemon_threads = True


class Sink:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.scheme = "https" if tls is not None else "http"
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._released = threading.Event()  # set: delayed replies answer at once
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                reply = sink._next(path)
                with sink._lock:
                    sink.received.append(Received(path, {k.lower(): v for k, v in self.headers.items()}, body,
                                                  time.monotonic(), self.client_address[1]))
                if reply.hang_up or reply.close or reply.http10:
                    self.close_connection = True
                if reply.http10:
                    self.protocol_version = "HTTP/1.0"
                if reply.hang_up:
                    return
                with contextlib.suppress(OSError):  # the client gave up (timeouts, byte caps): the point of some
                    sink._answer(self, reply, sink._released)

        self.server = _Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def on(self, path: str, *replies: Reply) -> str:
        """Answer ``path`` with these replies in turn; the last one repeats."""
        with self._lock:
            self._scripts[path] = list(replies)
        return self.url(path)

    def _next(self, path: str) -> Reply:
        with self._lock:
            script = self._scripts.get(path)
            if not script:
                return Reply()
            return script.pop(0) if len(script) > 1 else script[0]

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def release(self) -> None:
        """Delayed replies (those waiting and those to come) answer at once."""
        self._released.set()

    @staticmethod
    def _answer(handler: http.server.BaseHTTPRequestHandler, reply: Reply, released: threading.Event) -> None:
        if reply.delay:
            released.wait(reply.delay)
        if reply.drip:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 10_000:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(reply.drip)
            return
        length = reply.stream_bytes or len(reply.body)
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(length))
        if reply.close:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if reply.stream_bytes:
            chunk = b"x" * 65536
            sent = 0
            while sent < reply.stream_bytes:
                handler.wfile.write(chunk)
                sent += len(chunk)
        else:
            handler.wfile.write(reply.body)

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
