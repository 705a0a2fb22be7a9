"""The demo's recommendation service: a small real HTTP server the shop calls with ``requests``.

::

    python -m demo_site.recommendations --fd N        # serve on a listening socket we are given
    python -m demo_site.recommendations --listen 127.0.0.1:8002

``GET /recommendations?count=4&among=34`` answers ``{"picks": [...]}``, ``count``
distinct numbers below ``among``, after a wait like a real model server's: a median of
150 ms and a long tail (a p99 near a second, at most 2 s). That wait is what the shop's
``recommendations/`` page spends most of its time on, and what the dashboard shows as
``http.client``. ``GET /health`` answers at once. Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from zibrato.backends.toolkit.httpserver import parse_listen
from zibrato.runner import stop_on_signals

MEDIAN = 0.15
SPREAD = 0.8
CAP = 2.0
MAX_COUNT = 20


class RecommendationHandler(BaseHTTPRequestHandler):
    """Answer ``/recommendations`` slowly and ``/health`` at once."""

    server_version = "demo-recommendations"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/health":
            self._json(200, {"ok": True})
            return
        if parts.path != "/recommendations":
            self._json(404, {"error": "not found: try /recommendations?count=4&among=34"})
            return
        query = parse_qs(parts.query)
        try:
            count = min(int(query.get("count", ["4"])[0]), MAX_COUNT)
            among = int(query.get("among", ["1"])[0])
        except ValueError:
            self._json(400, {"error": "count and among are whole numbers"})
            return
        threading.Event().wait(min(random.lognormvariate(math.log(MEDIAN), SPREAD), CAP))
        picks = random.sample(range(max(among, 0)), min(max(count, 0), max(among, 0)))
        self._json(200, {"picks": picks})

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the demo's logs


class RecommendationServer(ThreadingHTTPServer):
    daemon_threads = True


def serve(listener: socket.socket) -> None:
    """Serve on ``listener`` until SIGINT or SIGTERM."""
    server = RecommendationServer(listener.getsockname()[:2], RecommendationHandler, False)
    server.socket.close()
    server.socket = listener
    stop = stop_on_signals()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo_site.recommendations", description=__doc__
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="a listening socket's file descriptor")
    where.add_argument("--listen", metavar="HOST:PORT", help="where to listen")
    args = parser.parse_args(argv)
    if args.fd is not None:
        listener = socket.socket(fileno=args.fd)
    else:
        host, port = parse_listen(args.listen)
        listener = socket.create_server((host, port))
    print(f"recommendation service: serving on {listener.getsockname()[:2]}", flush=True)
    serve(listener)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
