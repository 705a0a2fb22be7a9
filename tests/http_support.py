"""Raw HTTP for tests of the backends' HTTP server: exact bytes out, the whole answer in.

``requests`` normalises what it sends (it quotes a query, sets its own Host); these tests
need to send what a hostile client would, and to tell "no answer at all" from an error
answer. Import it from a test module (``from http_support import raw_request``).
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any

WAIT = 10.0


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as it came over the wire."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class NoAnswer(AssertionError):
    """The server closed or reset the connection without an HTTP answer."""


def read_all(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Read until the server closes (``timeout`` for each read); keep what came before a reset."""
    sock.settimeout(timeout)
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return bytes(received)


def parse_answer(raw: bytes) -> Answer:
    """Parse an HTTP/1.x answer; raise NoAnswer when there is none."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        raise NoAnswer(f"no HTTP answer, got {raw[:200]!r}")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    _, status, reason = [*status_line.split(" ", 2), ""][:3]
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status), reason, headers, body)


def raw_request(server: Any, request: str | bytes, timeout: float = WAIT) -> Answer:
    """Send ``request`` as is to ``server`` (an ``HttpServer``, or ``(host, port)``); return
    its answer. A ``str`` is sent as latin-1, byte for byte."""
    data = request.encode("latin-1") if isinstance(request, str) else request
    host, port = server if isinstance(server, tuple) else (server.host, server.port)
    host = "127.0.0.1" if host in ("", "0.0.0.0", "localhost") else host
    with socket.create_connection((host, port), timeout=timeout) as sock:
        # The server may answer (414, 431) before it has read all of it.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return parse_answer(read_all(sock, timeout))
