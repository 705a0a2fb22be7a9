"""The connection side of the backends' HTTP server: a listen backlog, a bounded number of
connection threads, a waiting line, and deadlines, each loss counted.

* The listen backlog is ``LISTEN_BACKLOG``: a burst of connections waits in the kernel
  for the accepting thread instead of having its SYNs dropped (and retried a second
  later, or many seconds later after repeated drops).
* At most ``max_connections`` connections are served at once, one thread each. A
  connection accepted while all are busy waits in a line of at most ``max_waiting``
  for the next free thread; past that, or after waiting longer than the timeout, it
  is answered ``503`` at once by the accepting thread (``busy_refusals``).
* A client has ``timeout`` seconds in all to send its request (one byte at a time does
  not reset the clock, as a socket timeout would), and ``timeout`` seconds to take the
  answer; a slow or silent client costs one thread at most that long (``request_timeouts``).
"""

from __future__ import annotations

import contextlib
import io
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import HTTPServer
from typing import Any

LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn (4096 on Linux >= 5.4)
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_MAX_WAITING = 512  # sockets held: with the threads', under a 1 024 descriptor limit
BUSY_BODY = b"busy: every connection of this server is taken; try again shortly\n"
BUSY_ANSWER = (
    b"HTTP/1.0 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n%s" % (len(BUSY_BODY), BUSY_BODY)
)
COUNTERS = ("host_refusals", "busy_refusals", "request_timeouts", "queued_connections")


class Tally:
    """Cumulative counts of what the server refused or delayed, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._counts[name] += count

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class DeadlineReader(io.RawIOBase):
    """A socket's reading side that fails once ``deadline`` (monotonic) has passed."""

    def __init__(self, sock: socket.socket, deadline: float, on_timeout: Callable[[], None]):
        super().__init__()
        self._sock, self._deadline, self._on_timeout = sock, deadline, on_timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError("the request did not arrive in time")
            self._sock.settimeout(remaining)
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self._on_timeout()
            raise


def _close_gently(sock: socket.socket) -> None:
    """Close after what was sent: end our side, read what the client already sent (unread
    input would make the kernel answer with a reset that can destroy our reply), close."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        for _ in range(16):  # at most 1 MiB, never waiting for more
            if not sock.recv(65536):
                break
    sock.close()


def refuse_busy(sock: socket.socket) -> None:
    """Answer 503 without blocking (the reply fits an empty send buffer) and close."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(BUSY_ANSWER)
    _close_gently(sock)


class BoundedServer(HTTPServer):
    """An HTTP server with a bounded number of connection threads (see the module doc)."""

    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        handler: Any,
        *,
        name: str,
        timeout: float,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_waiting: int = DEFAULT_MAX_WAITING,
        tally: Tally | None = None,
    ) -> None:
        if max_connections < 1 or max_waiting < 0:
            raise ValueError("max_connections must be at least 1 and max_waiting at least 0")
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.name = name
        self.request_timeout = timeout
        self.max_connections = max_connections
        self.max_waiting = max_waiting
        self.tally = tally or Tally()
        self._lock = threading.Lock()
        self._busy = 0
        self._waiting: deque[tuple[socket.socket, Any, float]] = deque()
        self._closed = False
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve our own name (getfqdn): slow without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    @property
    def busy(self) -> int:
        """Connections being served now."""
        return self._busy

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve on a free thread, or queue, or refuse (called on the accepting thread)."""
        with self._lock:
            served = self._busy < self.max_connections and not self._closed
            queued = not served and len(self._waiting) < self.max_waiting and not self._closed
            if served:
                self._busy += 1
            elif queued:
                self._waiting.append((request, client_address, time.monotonic()))
        if served:
            served = self._start_thread(request, client_address)
        if queued:
            self.tally.add("queued_connections")
        elif not served:
            self.tally.add("busy_refusals")
            refuse_busy(request)

    def _start_thread(self, request: Any, client_address: Any) -> bool:
        thread = threading.Thread(
            target=self._serve,
            args=(request, client_address),
            name=f"zibrato-{self.name}-http-connection",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (a process limit): this one is refused
            with self._lock:
                self._busy -= 1
            return False
        return True

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        """Serve one connection, then those waiting, until none is left."""
        while True:
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                _close_gently(request)
            while True:
                with self._lock:
                    if not self._waiting or self._closed:
                        self._busy -= 1
                        return
                    request, client_address, since = self._waiting.popleft()
                if time.monotonic() - since <= self.request_timeout:
                    break
                self.tally.add("busy_refusals")  # its client has most likely given up
                refuse_busy(request)

    def shutdown_request(self, request: Any) -> None:
        _close_gently(request)

    def server_close(self) -> None:
        """Stop listening and refuse the connections still waiting (threads end alone)."""
        super().server_close()
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
        for request, _, _ in waiting:
            refuse_busy(request)
