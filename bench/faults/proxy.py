"""A TCP proxy on 127.0.0.1 in front of a real server, which a fault stops without touching that server.

``cut()`` is a server stopped as its clients see it: every open connection is reset and new ones are refused,
until ``restore()``. ``stall()`` is a server or network gone silent mid-conversation: connections stay open and
what they carry is swallowed, until ``restore()`` (which resets them: they lost bytes). ``black_hole()`` is a
network that drops packets: the port keeps a listener that never accepts and whose accept queue is full, so
the kernel drops every new SYN and a client's connect runs into its own timeout instead of being refused. The
shared servers of the machine (PostgreSQL, RabbitMQ) are only ever "stopped" this way: other work uses them at
the same time.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` drops every connection and refuses new ones until
    ``restore()``; ``black_hole()`` lets new connections time out instead."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stopped = False
        self._stalled = threading.Event()
        self.restore()

    def stall(self) -> None:
        self._stalled.set()

    def restore(self) -> None:
        self._stalled.clear()
        self.cut()  # a black hole's silent listener holds the port, a stall's connections lost bytes
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        # Sockets are shut down before they are closed: closing does not wake a thread blocked on a socket, so a
        # cut listener would still accept one more connection, and an ended connection would not end its peer.
        with self._lock:
            if self._listener is not None:
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def black_hole(self) -> None:
        """Reset every connection, then hold the port with a listener whose accept queue is full: the kernel
        drops further SYNs (``tcp_abort_on_overflow`` is off by default), so connects time out."""
        self.cut()
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", self.port))
        silent.listen(0)
        fillers = []
        for _ in range(4):  # a backlog of 0 queues one connection; the extra ones are dropped, never refused
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            fillers.append(filler)
        time.sleep(0.1)  # the handshakes of the queued fillers complete
        with self._lock:
            self._listener = silent
            self._conns += fillers

    def close(self) -> None:
        self._stopped = True
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):  # forward each write as it comes: Nagle would hold a request's
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # body behind a delayed ACK (40 ms)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._stalled.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
