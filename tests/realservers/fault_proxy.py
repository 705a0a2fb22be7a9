"""An HTTP proxy on loopback in front of a real receiver, to give it the faults of issue 20.

It forwards every POST to the receiver and its answer back, unless told otherwise:
``script`` holds the next answers to give instead (status, headers, seconds to wait
first: a slow or hanging receiver), ``delay`` slows every forwarded request down. While
the receiver is stopped, the proxy drops the connection without an answer, as a receiver
that went away would. Every request is recorded. Bounded in time: a forwarded request
waits at most 10 s for the receiver.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

FORWARDED_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Authorization",
    "X-Prometheus-Remote-Write-Version",
    "User-Agent",
)


@dataclass
class Seen:
    """One request the proxy took: when, and what it answered (0: no answer)."""

    at: float
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a slow answer: expected here


class FaultProxy:
    """Forward to ``upstream`` (``http://host:port``); ``url`` is the proxy's own root."""

    def __init__(self, upstream: str, listen: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.script: deque[tuple[int, dict[str, str], float]] = deque()
        self.delay = 0.0
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k in FORWARDED_HEADERS if (v := self.headers.get(k))}
                status, answer_headers, answer = proxy.answer(self.path, headers, body)
                if status == 0:  # the receiver is down: so is the connection
                    self.close_connection = True
                    return
                self.send_response(status)
                for key, value in answer_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer((listen, 0), Handler)
        self.url = f"http://{listen}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            scripted = self.script.popleft() if self.script else None
            delay = self.delay
        if scripted is not None:
            status, answer_headers, wait = scripted
            time.sleep(wait)
            self._record(status, headers)
            return status, answer_headers, b""
        time.sleep(delay)
        try:
            reply = self._session.post(self.upstream + path, data=body, headers=headers, timeout=10)
        except requests.RequestException:
            self._record(0, headers)
            return 0, {}, b""
        self._record(reply.status_code, headers)
        kept = {"Content-Type": reply.headers.get("Content-Type", "application/octet-stream")}
        return reply.status_code, kept, reply.content

    def _record(self, status: int, headers: dict[str, str]) -> None:
        with self.lock:
            self.seen.append(Seen(time.monotonic(), status, headers))

    def statuses(self) -> list[int]:
        with self.lock:
            return [seen.status for seen in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self._session.close()
