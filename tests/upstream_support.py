"""A real HTTP server on a random loopback port for outgoing-call tests, always stopped.

    with upstream_server() as upstream:
        requests.get(upstream.url("/delay?ms=50"))   # answers after 50 ms
        requests.get(upstream.url("/status/503"))    # answers 503

Paths: ``/delay?ms=N`` (200 after N ms), ``/status/CODE`` (that status), anything else
200 at once; each answer is a small JSON body. ``upstream.requests`` counts what it served.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_DELAY_MS = 5_000


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer()

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        status = 200
        if parts.path == "/delay":
            delay = int(parse_qs(parts.query).get("ms", ["0"])[0])
            time.sleep(min(delay, MAX_DELAY_MS) / 1000)
        elif parts.path.startswith("/status/"):
            status = int(parts.path.rsplit("/", 1)[1])
        body = json.dumps({"path": parts.path, "status": status}).encode()
        self.server.requests += 1
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests = 0


class Upstream:
    """The running server: where it listens and what it served."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.host, self.port = server.server_address[:2]

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    @property
    def requests(self) -> int:
        return self._server.requests


@contextmanager
def upstream_server() -> Iterator[Upstream]:
    """Serve on 127.0.0.1 on a port the system picks, until the block ends."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Upstream(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
