"""The small threaded HTTP server that backends with a web side share (prometheus, dashboard).

Routes map an exact path (the query string aside) to a handler that takes a
:class:`Request` and returns a :class:`Response`; anything else is a 404. The server never
resolves a name (binding ``localhost`` reads the hosts file; nothing asks DNS), gives every
connection a timeout so a stalled client cannot hold a thread, answers a handler's
exception with a 500 (logged once per kind), and reports a port that is taken as
:class:`~zibrato.errors.AddressInUse`, the error every zibrato listener raises for it
(any other failure to listen is a :class:`~zibrato.errors.ConfigError`).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from zibrato.errors import AddressInUse, ConfigError

log = logging.getLogger("zibrato")

DEFAULT_TIMEOUT = 10.0
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


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
    """Serve ``routes`` on ``listen`` from a daemon thread, one thread per connection.

    >>> server = HttpServer("127.0.0.1:0", {"/": lambda request: Response.text("hi")},
    ...                     name="example")
    >>> server.start(); server.url("/")                   # doctest: +SKIP
    'http://127.0.0.1:40123/'
    >>> server.stop()                                     # doctest: +SKIP

    ``home`` is the path a user opens (named in errors). ``headers`` are added to every
    response (a Content-Security-Policy, say).
    ``allowed_hosts``, when given, is the set of names a request's ``Host`` header may
    carry (any port); others get a 403, which stops a DNS-rebinding page from reading a
    loopback server through a name of its own. A wildcard listen address allows any.
    """

    def __init__(
        self,
        listen: str,
        routes: Mapping[str, Handler],
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        allowed_hosts: Collection[str] | None = None,
        home: str = "/",
        not_found: str = "not found\n",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self.home = home
        self.routes = dict(routes)
        self.name = name
        self.headers = dict(headers or {})
        if allowed_hosts is not None and self.host not in _WILDCARD_HOSTS:
            self.allowed_hosts: frozenset[str] | None = frozenset(
                {*allowed_hosts, self.host.lower()}
            )
        else:
            self.allowed_hosts = None
        self.not_found = not_found
        self.timeout = timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failures: set[str] = set()

    def __repr__(self) -> str:
        return f"<HttpServer {self.name} {base_url(self.host, self.port)}>"

    def url(self, path: str = "/") -> str:
        """Return the URL of ``path`` on this server (the real port once started)."""
        return base_url(self.host, self.port) + path

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
        allowed, host = self.allowed_hosts, host_header
        if allowed is not None and host is not None and _host_name(host) not in allowed:
            return Response.text("forbidden: unexpected Host header\n", 403)
        parts = urlsplit(target)
        handler = self.routes.get(parts.path)
        if handler is None:
            return Response.text(self.not_found, 404)
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", TEXT, {"Allow": "GET, HEAD"})
        request = Request(parts.path, parse_qs(parts.query, max_num_fields=100))
        try:
            return handler(request)
        except BadRequest as exc:
            return Response.json({"error": str(exc)}, 400)
        except Exception as exc:
            kind = type(exc).__name__
            if kind not in self._failures:
                self._failures.add(kind)
                log.warning(
                    "zibrato %s http: %s failed (%s: %s); later failures of this kind are "
                    "logged at debug level",
                    self.name,
                    parts.path,
                    kind,
                    exc,
                )
            log.debug("zibrato %s http: %s failed", self.name, parts.path, exc_info=True)
            return Response.text("internal error\n", 500)


def _host_name(host_header: str) -> str:
    """Return the name part of a Host header (``[::1]:80`` -> ``::1``), lowercased."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at stop

    def setup(self) -> None:
        super().setup()
        # A client that stops mid-request must not hold a thread forever.
        self.connection.settimeout(self.server.owner.timeout)

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
        for name, value in {**owner.headers, **response.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        name = self.server.owner.name
        log.debug("zibrato %s http: %s - " + format, name, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: HttpServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve our own name (getfqdn): slow without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        name = self.owner.name
        log.debug("zibrato %s http: error serving %s", name, client_address, exc_info=True)
