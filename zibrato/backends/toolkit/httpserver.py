"""The small threaded HTTP server that backends with a web side share (prometheus, dashboard).

Routes map an exact path (the query string aside) to a handler that takes a
:class:`Request` and returns a :class:`Response`; anything else is a 404. The server never
resolves a name (binding ``localhost`` reads the hosts file; nothing asks DNS); bounds its
connection threads and gives every client a deadline (``connections.py``); answers only
the ``Host`` names it knows (``allowed_hosts.py``, against DNS rebinding); answers every
request it can read, a malformed one with a one-line 4xx, a handler's exception with a
500 (logged once per kind); counts what it refuses (:meth:`HttpServer.counters`); and
reports a port that is taken as :class:`~zibrato.errors.AddressInUse`, the error every
zibrato listener raises for it (any other failure to listen is a
:class:`~zibrato.errors.ConfigError`).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from zibrato.backends.toolkit.allowed_hosts import HostCheck
from zibrato.backends.toolkit.connections import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_WAITING,
    BoundedServer,
    DeadlineReader,
    Tally,
)
from zibrato.errors import AddressInUse, ConfigError

log = logging.getLogger("zibrato")

DEFAULT_TIMEOUT = 5.0  # to send the request, and again to take the answer
MAX_QUERY_FIELDS = 100
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


class BadRequest(ValueError):
    """A handler's answer to a malformed query: sent as a 400 with the message."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler gets: the path and the parsed query string."""

    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)

    def param(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of query parameter ``name`` (or ``default``)."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler returns."""

    status: int = 200
    body: bytes = b""
    content_type: str = TEXT
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        """Return a plain-text response."""
        return cls(status, text.encode(), TEXT)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        """Return ``data`` as JSON (never NaN or infinity: those must be None already)."""
        body = json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
        return cls(status, body, JSON, {"Cache-Control": "no-store"})


Handler = Callable[[Request], Response]


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:8050`` for IPv6); raise ValueError when malformed.

    >>> parse_listen("[::1]:8050")
    ('::1', 8050)
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def base_url(host: str, port: int) -> str:
    """Return ``http://HOST:PORT`` as a browser on this machine would reach it."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class HttpServer:
    """Serve ``routes`` on ``listen`` from a daemon thread, a bounded thread per connection.

    >>> server = HttpServer("127.0.0.1:0", {"/": lambda request: Response.text("hi")},
    ...                     name="example")
    >>> server.start(); server.url("/")                   # doctest: +SKIP
    'http://127.0.0.1:40123/'
    >>> server.stop()                                     # doctest: +SKIP

    ``home`` is the path a user opens (named in errors). ``headers`` are added to every
    response (a Content-Security-Policy, say). ``allowed_hosts`` are the names a request's
    ``Host`` header may carry besides localhost, IP addresses and the listen name (see
    :mod:`~zibrato.backends.toolkit.allowed_hosts`); others get a 403. ``timeout``,
    ``max_connections`` and ``max_waiting`` bound what one client may hold (see
    :mod:`~zibrato.backends.toolkit.connections`).
    """

    def __init__(
        self,
        listen: str,
        routes: Mapping[str, Handler],
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        allowed_hosts: str | Iterable[str] | None = None,
        home: str = "/",
        not_found: str = "not found\n",
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_waiting: int = DEFAULT_MAX_WAITING,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self.home = home
        self.routes = dict(routes)
        self.name = name
        self.headers = dict(headers or {})
        self.hosts = HostCheck(allowed_hosts, listen_host=self.host)
        self.not_found = not_found
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_waiting = max_waiting
        self.tally = Tally()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failures: set[str] = set()
        self._warned_host = False

    def __repr__(self) -> str:
        return f"<HttpServer {self.name} {base_url(self.host, self.port)}>"

    def url(self, path: str = "/") -> str:
        """Return the URL of ``path`` on this server (the real port once started)."""
        return base_url(self.host, self.port) + path

    def counters(self) -> dict[str, int]:
        """Return what was refused or delayed since start, cumulative (for health series).

        ``host_refusals`` (403 for the Host header), ``busy_refusals`` (503: every
        connection thread busy and the waiting line full), ``request_timeouts`` (a client
        that did not send its request, or take the answer, in time) and
        ``queued_connections`` (connections that waited for a free thread).
        """
        return self.tally.snapshot()

    @property
    def busy(self) -> int:
        """Return how many connections are being served now (0 when stopped)."""
        server = self._server
        return server.busy if server is not None else 0

    def start(self) -> None:
        """Bind and serve on a daemon thread; raise AddressInUse when the port is taken."""
        what = f"the {self.name} backend cannot serve {self.url(self.home)}"
        try:
            server = _Server((self.host, self.port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"{what}: the address is already in use; stop what holds it or choose "
                    "another with the backend's listen option"
                ) from None
            raise ConfigError(f"{what}: {exc.strerror or exc}") from None
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name=f"zibrato-{self.name}-http", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        if thread is not None and thread.is_alive():
            server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def respond(self, method: str, target: str, host_header: str | None) -> Response:
        """Return the response to one request (the part of serving that needs no socket)."""
        parts = urlsplit(target)
        # An absolute target (``GET http://name/metrics``, as through a proxy) names the
        # host itself, and RFC 9112 says it wins over the Host header.
        host = parts.netloc if parts.scheme else host_header
        if not self.hosts.allows(host):
            return self._refuse_host(host or "")
        handler = self.routes.get(parts.path)
        if handler is None:
            return Response.text(self.not_found, 404)
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", TEXT, {"Allow": "GET, HEAD"})
        try:
            query = parse_qs(parts.query, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            message = f"too many query parameters: at most {MAX_QUERY_FIELDS}"
            return Response.json({"error": message}, 400)
        try:
            return handler(Request(parts.path, query))
        except BadRequest as exc:
            return Response.json({"error": str(exc)}, 400)
        except Exception as exc:
            return self._failed(parts.path, exc)

    def _refuse_host(self, host: str) -> Response:
        self.tally.add("host_refusals")
        shown = repr(host[:100])
        if not self._warned_host:
            self._warned_host = True
            log.warning(
                "zibrato %s http: refused a request for Host %s (accepted: %s); add the name "
                "to the backend's allowed-hosts option if it is yours; further refusals are "
                "counted in zibrato.backend.http_host_refusals",
                self.name,
                shown,
                self.hosts.describe(),
            )
        return Response.text(
            f"forbidden: Host {shown} is not one of this server's names (allowed-hosts)\n", 403
        )

    def _failed(self, path: str, exc: Exception) -> Response:
        kind = type(exc).__name__
        if kind not in self._failures:
            self._failures.add(kind)
            log.warning(
                "zibrato %s http: %s failed (%s: %s); later failures of this kind are "
                "logged at debug level",
                self.name,
                path,
                kind,
                exc,
            )
        log.debug("zibrato %s http: %s failed", self.name, path, exc_info=True)
        return Response.text("internal error\n", 500)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at stop
    # The errors http.server answers itself (400, 414, 431, 501, 505) as one line of text,
    # with a status line even when the request line was too broken to say its version.
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = TEXT
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        owner = self.server.owner
        # The whole request must arrive within the timeout, however slowly it trickles in.
        self.rfile.close()
        deadline = time.monotonic() + owner.timeout
        reader = DeadlineReader(self.connection, deadline, self._timed_out)
        self.rfile = io.BufferedReader(reader)

    def _timed_out(self) -> None:
        self.server.owner.tally.add("request_timeouts")

    def end_headers(self) -> None:
        # Headers and body are written next: the client has the timeout to take them.
        self.connection.settimeout(self.server.owner.timeout)
        for name, value in self.server.owner.headers.items():
            self.send_header(name, value)
        super().end_headers()

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        owner = self.server.owner
        response = owner.respond(method, self.path, self.headers.get("Host"))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        try:
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(response.body)
        except TimeoutError:  # a client that does not take its answer (http.server logs it)
            owner.tally.add("request_timeouts")
            raise

    def log_message(self, format: str, *args: Any) -> None:
        name = self.server.owner.name
        log.debug("zibrato %s http: %s - " + format, name, self.client_address[0], *args)


class _Server(BoundedServer):
    def __init__(self, address: tuple[str, int], owner: HttpServer) -> None:
        self.owner = owner
        super().__init__(
            address,
            _Handler,
            name=owner.name,
            timeout=owner.timeout,
            max_connections=owner.max_connections,
            max_waiting=owner.max_waiting,
            tally=owner.tally,
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        name = self.owner.name
        log.debug("zibrato %s http: error serving %s", name, client_address, exc_info=True)
