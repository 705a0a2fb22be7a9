"""A loopback HTTP server that records every POST and answers from a script: the stand-in
for a push target in the unit tests of ``toolkit/push.py`` and the otlp and remote-write
backends (the real receivers are in tests/realservers/).
"""

from __future__ import annotations

import gzip
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Posted:
    """One request: its path, headers (lower-case names) and body (gzip undone)."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what it was answered


class Receiver:
    """Answer 200 (with ``body``), or the next of ``script``: (status, headers, body)."""

    def accepted(self) -> list[Posted]:
        """The requests answered with a 2xx."""
        with self.lock:
            return [posted for posted in self.posted if 200 <= posted.status < 300]

    def __init__(self, body: bytes = b"") -> None:
        self.posted: list[Posted] = []
        self.script: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.body = body
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                headers = {key.lower(): value for key, value in self.headers.items()}
                with receiver.lock:
                    status, extra, body = (
                        receiver.script.popleft() if receiver.script else (200, {}, receiver.body)
                    )
                    receiver.posted.append(Posted(self.path, headers, raw, status))
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class FakeClock:
    """A clock and a pause for a push backend: retries and backoff take no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        self.now += seconds
        return False
