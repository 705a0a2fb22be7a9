"""Outgoing HTTP calls: ``http.client.request.duration`` for urllib3 (so ``requests`` and
every other urllib3 user) and httpx (sync and async), with no change to the application.

Neither library has a process-wide hook, so :func:`install` wraps one method of each
through a :class:`~zibrato.framework.patches.Patch` (idempotent, reversible, and
working beside OpenTelemetry's, Sentry's or ddtrace's wrappers of the same methods):

* ``urllib3.HTTPConnectionPool.urlopen``: every request urllib3 sends, ``requests``'
  included; a call that urllib3 retries or redirects by itself is one call;
* ``httpx.HTTPTransport.handle_request`` and ``httpx.AsyncHTTPTransport.handle_async_request``
  when httpx is installed: every request an httpx client sends over the network.

Each call's time runs until the response's headers are in (a body read later, as
``requests`` does, is the caller's own time) or until it fails. Inside a unit of work
(a request or a Celery task: :data:`~zibrato.framework.units.current_unit`) the call is
an ``http.client`` part of the unit's breakdown and is recorded with the unit, tagged
``zibrato.route`` (a task's: ``celery.task.name``); outside one it is recorded at once
through the client the installing adapter gave (``outside``).

Tags (OpenTelemetry's names): ``server.address`` (the host, never a path or a query),
``server.port``, ``http.request.method``, ``http.response.status_code``, ``error.type``
(the exception's class, or the status for a 4xx or 5xx answer). Hosts are bounded: at
most :data:`MAX_ADDRESSES` distinct (host, port) pairs per process (per-tenant
subdomains, bucket hosts would not stay few); the calls to any other are tagged
``_OTHER`` (host and port), and the first such call is logged once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from time import perf_counter
from typing import Any

from zibrato.client import Zibrato
from zibrato.framework import schema
from zibrato.framework.breakdown import HTTP_CLIENT
from zibrato.framework.patches import Patch
from zibrato.framework.units import UnitState, current_unit

log = logging.getLogger("zibrato.http_client")

MAX_ADDRESSES = 100
HTTP_CLIENT_LEVEL = "info"
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_OTHER_ADDRESS = (schema.OTHER, schema.OTHER)
_ADDRESS = "_zibrato_address"  # a urllib3 pool's address tags, kept on the pool

Address = tuple[str, str]
# Where a call outside any unit of work is recorded (None: not recorded); set by install().
OutsideClient = Callable[[], Zibrato | None]


class Addresses:
    """The bounded ``(server.address, server.port)`` tag values of one process."""

    def __init__(self, limit: int = MAX_ADDRESSES) -> None:
        self.limit = limit
        self.folded = 0  # calls tagged _OTHER because the cap was reached
        self._known: dict[tuple[object, object], Address] = {}
        self._lock = threading.Lock()

    def tag(self, host: object, port: object, scheme: object) -> Address:
        """Return the tag values of a call to ``host:port`` (``_OTHER`` past the cap)."""
        found = self._known.get((host, port))
        if found is not None:
            return found
        with self._lock:
            if len(self._known) >= self.limit:
                self.folded += 1
                if self.folded == 1:
                    log.warning(
                        "zibrato: outgoing HTTP calls reached %d distinct hosts; calls to "
                        "any other are tagged server.address=_OTHER",
                        self.limit,
                    )
                return _OTHER_ADDRESS
            text = str(host).strip("[]").lower() if host else schema.OTHER
            number = str(port) if port else _DEFAULT_PORTS.get(str(scheme), "")
            found = (schema.bounded(text), number or schema.OTHER)
            self._known[host, port] = found
        return found


ADDRESSES = Addresses()
_outside: list[OutsideClient] = []  # the first installer's, kept while installed
_tags = schema.TagCache()  # tags of calls outside units of work (no route)
# Set while a call is measured in this context: urllib3 calls urlopen again for its own
# retries and redirects, and those belong to the call already measured.
_measuring: ContextVar[bool] = ContextVar("zibrato_http_call", default=False)


def record(
    address: Address, method: object, status: object, error: str | None, seconds: float
) -> None:
    """Record one call that is not part of a unit of work, through the installer's client."""
    client = _outside[0]() if _outside else None
    if client is not None:
        tags = _tags.route(None).client_call(address, method, status, error)
        client.timing(schema.HTTP_CLIENT_DURATION, seconds, level=HTTP_CLIENT_LEVEL, tags=tags)


def _urllib3_urlopen(original: Callable[..., Any]) -> Callable[..., Any]:
    # Written out for speed (a view pays it per call): inside a unit, two clock reads,
    # a context variable for urllib3's own retries, and two appends; the tags are made
    # when the unit is recorded. A call holds no other component's work, so it counts
    # in the breakdown once it is over (Breakdown.add), with no span to open.
    def urlopen(pool: Any, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        state = current_unit.get()
        if state is None:
            return _call_outside(original, pool, method, url, args, kwargs)
        if _measuring.get() or not state.switches.http_client:
            return original(pool, method, url, *args, **kwargs)  # a retry, or switched off
        token = _measuring.set(True)
        status = error = None
        start = perf_counter()
        try:
            response = original(pool, method, url, *args, **kwargs)
            status = getattr(response, "status", None)
            return response
        except BaseException as exc:
            error = type(exc).__qualname__
            raise
        finally:
            end = perf_counter()
            _measuring.reset(token)
            try:
                (state.breakdown or state.start_breakdown()).add(HTTP_CLIENT, start, end)
                address = pool.__dict__.get(_ADDRESS) or _address_of(pool)
                state.add_call((address, method, status, error, end - start))
            except Exception as failure:  # ours: never the caller's
                _report(failure)

    return urlopen


def _call_outside(
    original: Callable[..., Any], pool: Any, method: Any, url: Any, args: Any, kwargs: Any
) -> Any:
    """One urllib3 call outside any request: recorded at once (if the installer wants it)."""
    if _measuring.get():
        return original(pool, method, url, *args, **kwargs)
    token = _measuring.set(True)
    status = error = None
    start = perf_counter()
    try:
        response = original(pool, method, url, *args, **kwargs)
        status = getattr(response, "status", None)
        return response
    except BaseException as exc:
        error = type(exc).__qualname__
        raise
    finally:
        seconds = perf_counter() - start
        _measuring.reset(token)
        try:
            record(pool.__dict__.get(_ADDRESS) or _address_of(pool), method, status, error, seconds)
        except Exception as failure:
            _report(failure)


def _address_of(pool: Any) -> Address:
    """Return a urllib3 pool's bounded address tags, kept on the pool (it has one host)."""
    address = ADDRESSES.tag(pool.host, pool.port, pool.scheme)
    pool.__dict__[_ADDRESS] = address
    return address


def _httpx_send(original: Callable[..., Any]) -> Callable[..., Any]:
    def handle_request(transport: Any, request: Any) -> Any:
        state = current_unit.get()
        if state is not None and not state.switches.http_client:
            return original(transport, request)
        status = error = None
        start = perf_counter()
        try:
            response = original(transport, request)
            status = response.status_code
            return response
        except BaseException as exc:
            error = type(exc).__qualname__
            raise
        finally:
            _finish_httpx(state, perf_counter(), start, request, status, error)

    return handle_request


def _httpx_send_async(original: Callable[..., Any]) -> Callable[..., Any]:
    async def handle_async_request(transport: Any, request: Any) -> Any:
        state = current_unit.get()
        if state is not None and not state.switches.http_client:
            return await original(transport, request)
        status = error = None
        start = perf_counter()
        try:
            response = await original(transport, request)
            status = response.status_code
            return response
        except BaseException as exc:
            error = type(exc).__qualname__
            raise
        finally:
            _finish_httpx(state, perf_counter(), start, request, status, error)

    return handle_async_request


def _finish_httpx(
    state: UnitState | None,
    end: float,
    start: float,
    request: Any,
    status: int | None,
    error: str | None,
) -> None:
    """Note (in a unit of work) or record one httpx call; never raise into the caller's."""
    try:
        url = request.url
        address = ADDRESSES.tag(url.host, url.port, url.scheme)
        if state is None:
            record(address, request.method, status, error, end - start)
            return
        (state.breakdown or state.start_breakdown()).add(HTTP_CLIENT, start, end)
        state.add_call((address, request.method, status, error, end - start))
    except Exception as failure:
        _report(failure)


_failures = 0


def _report(failure: Exception) -> None:
    global _failures
    _failures += 1
    if _failures == 1:
        log.error(
            "zibrato: an outgoing HTTP call was not measured (%r); further failures are not logged",
            failure,
        )


def _patches() -> list[Patch]:
    """The patches this process can install (httpx only when it is installed)."""
    import urllib3

    found = [Patch(urllib3.HTTPConnectionPool, "urlopen", _urllib3_urlopen)]
    try:
        import httpx
    except ImportError:
        return found
    found.append(Patch(httpx.HTTPTransport, "handle_request", _httpx_send))
    found.append(Patch(httpx.AsyncHTTPTransport, "handle_async_request", _httpx_send_async))
    return found


_installed: list[Patch] = []
_install_lock = threading.Lock()


def install(*, outside: OutsideClient) -> None:
    """Measure outgoing calls from now on (once per process, whoever asks first).

    ``outside`` returns the client that records calls made outside any unit, or None
    to record none (the adapter's setting says no).
    """
    with _install_lock:
        if not _outside:
            _outside.append(outside)
        if not _installed:
            _installed.extend(_patches())
        for patch in _installed:
            patch.install()


def uninstall() -> None:
    """Stop measuring outgoing calls (the original methods are back, or passed through)."""
    with _install_lock:
        for patch in _installed:  # kept: one still in another wrapper's chain is reused
            patch.uninstall()
        _outside.clear()


def installed() -> bool:
    """Whether outgoing calls are being measured."""
    return any(patch.installed for patch in _installed)
