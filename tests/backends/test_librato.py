"""The librato backend against a real HTTP server on loopback that plays Librato."""

from __future__ import annotations

import base64
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from backend_support import backend_maker
from requests.adapters import HTTPAdapter

from zibrato import Zibrato
from zibrato.aggregation import Rollup, Series, distribution_stats
from zibrato.backends.librato import MAX_PER_POST, TOKEN_ENV, LibratoBackend, librato_name
from zibrato.backends.toolkit.push import TargetRefused, TargetTimeout, TargetUnavailable
from zibrato.broker import Broker

EMAIL = "ops@example.com"
TOKEN = "tok-Sup3rS3cret-4242"
NOW = 1_700_000_000.5


# -- a loopback Librato --------------------------------------------------------------------
@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    names: list[str]
    status: int  # 0: the request hung


class QuietServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a hung request: expected here


class LibratoStub:
    """Check auth and payload like Librato; answer by policy (script, poison, hang, fail_with)."""

    def __init__(self, email: str = EMAIL, token: str = TOKEN) -> None:
        self.auth = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
        self.requests: list[Received] = []
        self.delivered: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.script: deque[tuple[int, dict[str, str]]] = deque()  # the next answers
        self.poison: str | None = None  # 400 for any batch holding a name starting so
        self.fail_with: int | None = None  # answer every request with this status
        self.hang = False  # hold requests until released (bounded), then answer 503
        self.release = threading.Event()
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers = stub.answer(self.path, self.headers.get("Authorization"), raw)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def answer(self, path: str, auth: str | None, raw: bytes) -> tuple[int, dict[str, str]]:
        points = self._check(path, raw)
        names = [point.get("name", "") for point in points]
        with self.lock:
            status, headers = 200, dict[str, str]()
            if auth != self.auth:
                status = 401
            elif self.hang:
                status = 0
            elif self.fail_with:
                status = self.fail_with
            elif self.script:
                status, headers = self.script.popleft()
            elif self.poison and any(name.startswith(self.poison) for name in names):
                status = 400
            self.requests.append(Received(time.monotonic(), names, status))
            if status == 200:
                self.delivered.extend(points)
        if status == 0:
            self.release.wait(5)
            return 503, {}
        return status, headers

    def _check(self, path: str, raw: bytes) -> list[dict[str, Any]]:
        def no_constants(name: str) -> None:
            self.violations.append(f"non-finite number {name} in the body")

        if path != "/v1/metrics":
            self.violations.append(f"posted to {path}")
        payload = json.loads(raw, parse_constant=no_constants)
        points = payload.get("gauges", []) + payload.get("counters", [])
        if len(points) > MAX_PER_POST:
            self.violations.append(f"{len(points)} measurements in one POST")
        return list(points)

    def names(self) -> list[str]:
        return [point["name"] for point in self.delivered]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def gauges(names: Sequence[str], value: float = 1.0) -> Rollup:
    return Rollup(NOW, 1.0, tuple(Series(n, "gauge", None, {}, {"value": value}) for n in names))


@pytest.fixture
def stub() -> Iterator[LibratoStub]:
    stub = LibratoStub()
    yield stub
    stub.close()
    assert stub.violations == []


@pytest.fixture
def make_backend(stub: LibratoStub) -> Iterator[Callable[..., LibratoBackend]]:
    yield from backend_maker(
        LibratoBackend,
        url=stub.url,
        email=EMAIL,
        token=TOKEN,
        flush_interval=5.0,
        timeout=1.0,
        backoff_base=0.01,
        backoff_cap=0.05,
    )


# -- the payload -------------------------------------------------------------------------
def test_series_become_legacy_gauge_measurements(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    backend = make_backend(source="web-1")
    values = [0.25, 0.5, 2.0]
    rollup = Rollup(
        NOW,
        10.0,
        (
            Series("orders.placed", "counter", None, {"shop": "eu west"}, {"sum": 7, "rate": 0.7}),
            Series("queue.depth", "gauge", "worker-2", {}, {"value": 3.5}),
            Series("orders.load", "timer", None, {}, distribution_stats(values), values),
            Series("broken", "gauge", None, {}, {"value": math.inf}),
        ),
    )
    backend.emit(rollup)
    assert stub.delivered == [
        {
            "name": "orders.placed.shop_eu_west",
            "value": 7,
            "source": "web-1",
            "measure_time": 1_700_000_000,
        },
        {"name": "queue.depth", "value": 3.5, "source": "worker-2", "measure_time": 1_700_000_000},
        {
            "name": "orders.load",
            "count": 3,
            "sum": 2.75,
            "min": 0.25,
            "max": 2.0,
            "sum_squares": 4.3125,
            "source": "web-1",
            "measure_time": 1_700_000_000,
        },
    ]
    assert backend.rejected_measurements == 1  # the non-finite one never left
    assert backend.buffered == 0 and backend.target_errors == 0


def test_names_fold_tags_and_stay_within_librato_limits() -> None:
    assert librato_name("http.requests", {"status": "200", "method": "GET"}) == (
        "http.requests.method_GET.status_200"
    )
    assert librato_name("café/ok", {}) == "caf__ok"
    long_a, long_b = librato_name("x" * 300, {}), librato_name("x" * 299 + "y", {})
    assert len(long_a) == 255 and len(long_b) == 255 and long_a != long_b


def test_at_most_300_measurements_per_post(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    backend = make_backend()
    backend.emit(gauges([f"g{i}" for i in range(701)]))
    assert [len(r.names) for r in stub.requests] == [300, 300, 101]
    assert stub.names() == [f"g{i}" for i in range(701)]


def test_flush_sends_the_aggregated_series_and_the_backend_health(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    backend = make_backend()
    backend.aggregator.add_events([(0, "hits", 2, None, None), (0, "hits", 3, None, None)])
    backend.flush()
    delivered = {point["name"]: point for point in stub.delivered}
    assert delivered["hits"]["value"] == 5
    assert "zibrato.backend.events.backend_librato" in delivered


# -- delivery policy -----------------------------------------------------------------------
def test_server_errors_are_retried_until_delivered(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    stub.script.extend([(500, {}), (503, {})])
    backend = make_backend()
    backend.emit(gauges(["a", "b"]))
    assert [r.status for r in stub.requests] == [500, 503, 200]
    assert stub.names() == ["a", "b"]
    assert backend.target_errors == 2 and isinstance(backend.last_error, TargetUnavailable)
    assert backend.buffered == 0


def test_retry_after_is_honoured(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    stub.script.append((429, {"Retry-After": "1"}))
    backend = make_backend(flush_interval=3.0)
    backend.emit(gauges(["a"]))
    first, second = stub.requests
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0
    assert stub.names() == ["a"]


def test_retry_after_beyond_the_flush_holds_sending_until_it_passes(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    stub.script.append((503, {"Retry-After": "30"}))
    backend = make_backend(flush_interval=0.3)
    backend.emit(gauges(["a"]))
    backend.emit(gauges(["b"]))
    assert [r.status for r in stub.requests] == [503]
    assert backend.buffered == 2


def test_a_400_isolates_the_bad_points_and_delivers_the_rest(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    stub.poison = "poison"
    names = [f"g{i}" for i in range(650)]
    names[17], names[444] = "poison.one", "poison.two"
    backend = make_backend()
    backend.emit(gauges(names))
    assert sorted(stub.names()) == sorted(n for n in names if not n.startswith("poison"))
    assert backend.rejected_measurements == 2 and backend.target_errors == 2
    assert backend.buffered == 0
    assert len(stub.requests) < 60  # halving, not one request per point


def test_401_is_not_retried_and_keeps_the_data_buffered(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    backend = make_backend(token="not-the-token")
    backend.emit(gauges(["a"]))
    assert [r.status for r in stub.requests] == [401]
    backend.emit(gauges(["b"]))
    assert [r.status for r in stub.requests] == [401, 401]  # one request per flush
    assert backend.buffered == 2 and backend.target_errors == 2
    assert isinstance(backend.last_error, TargetRefused)


def test_a_hanging_server_times_out_and_the_data_waits_for_it(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    stub.hang = True
    backend = make_backend(timeout=0.2, flush_interval=0.6)
    started = time.monotonic()
    backend.emit(gauges(["a", "b"]))
    assert time.monotonic() - started < 0.6 + 0.5  # gave up before the next flush
    assert len(stub.requests) >= 2 and backend.buffered == 2
    assert isinstance(backend.last_error, TargetTimeout)
    stub.hang = False
    stub.release.set()
    backend.emit(gauges(["c"]))
    assert stub.names() == ["a", "b", "c"] and backend.buffered == 0


def test_the_buffer_is_bounded_dropping_the_oldest(
    stub: LibratoStub, make_backend: Callable[..., LibratoBackend]
) -> None:
    stub.fail_with = 403
    backend = make_backend(max_buffer=5)
    for flush in range(3):
        backend.emit(gauges([f"f{flush}.{i}" for i in range(3)]))
    assert backend.buffered == 5 and backend.dropped_measurements == 4
    stub.fail_with = None
    backend.emit(gauges([]))
    assert stub.names() == ["f1.1", "f1.2", "f2.0", "f2.1", "f2.2"]


def test_an_unreachable_server_keeps_the_data(
    make_backend: Callable[..., LibratoBackend],
) -> None:
    backend = make_backend(url=f"http://127.0.0.1:{closed_port()}", flush_interval=0.2)
    backend.emit(gauges(["a"]))
    assert backend.buffered == 1 and isinstance(backend.last_error, TargetUnavailable)


# -- secrets ------------------------------------------------------------------------------
def test_the_token_never_shows(
    stub: LibratoStub,
    make_backend: Callable[..., LibratoBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = (TOKEN, base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode())
    errors = []
    unreachable = make_backend(url=f"http://127.0.0.1:{closed_port()}/", flush_interval=0.2)
    unreachable.emit(gauges(["a"]))
    errors.append(unreachable.last_error)
    stub.fail_with = 401
    backend = make_backend(timeout=0.2, flush_interval=0.4)
    backend.emit(gauges(["a"]))
    errors.append(backend.last_error)
    stub.fail_with, stub.hang = None, True
    backend.emit(gauges(["b"]))
    errors.append(backend.last_error)
    assert len(errors) == 3 and all(errors)
    shown = [caplog.text, repr(backend), repr(unreachable), *map(str, errors), *map(repr, errors)]
    assert "target failed" in caplog.text
    for secret in secrets:
        assert not any(secret in text for text in shown)
    assert repr(backend) == f"<LibratoBackend url={stub.url!r} email={EMAIL!r}>"


class EchoingAdapter(HTTPAdapter):
    """A transport that fails quoting the request's credentials, as a careless proxy might."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        raise requests.ConnectionError(
            f"refused {request.method} {request.url} with {request.headers['Authorization']}"
            f" (password {TOKEN})",
            request=request,
        )


def test_a_request_error_quoting_the_token_is_scrubbed(
    make_backend: Callable[..., LibratoBackend], caplog: pytest.LogCaptureFixture
) -> None:
    with requests.Session() as session:
        session.mount("http://", EchoingAdapter())
        backend = make_backend(session=session, flush_interval=0.1)
        backend.emit(gauges(["a"]))
    assert backend.buffered == 1 and backend.last_error is not None
    secret_auth = base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
    for text in (str(backend.last_error), caplog.text):
        assert "refused POST" in text and "***" in text
        assert TOKEN not in text and secret_auth not in text


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as raised:
        LibratoBackend(url=f"https://{EMAIL}:{TOKEN}@metrics.example.com", email=EMAIL, token=TOKEN)
    assert TOKEN not in str(raised.value)


def test_the_token_comes_from_the_environment(
    stub: LibratoStub,
    make_backend: Callable[..., LibratoBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    backend = make_backend(token=None)
    backend.emit(gauges(["a"]))
    assert stub.names() == ["a"]
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(ValueError, match=TOKEN_ENV):
        LibratoBackend(email=EMAIL)


# -- end to end --------------------------------------------------------------------------
def test_end_to_end_through_the_broker(stub: LibratoStub) -> None:
    broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    frontend, backend_address = broker.start()
    backend = LibratoBackend(
        connect=backend_address,
        flush_interval=0.2,
        url=stub.url,
        email=EMAIL,
        token=TOKEN,
        source="test",
        backoff_base=0.01,
    )
    client = None
    try:
        backend.start()
        client = Zibrato(frontend)
        client.incr("orders.placed", 2, tags={"shop": "eu"})
        client.timing("orders.load", 0.02)
        client.flush(timeout=5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "orders.load" not in stub.names():
            time.sleep(0.05)
    finally:
        if client is not None:
            client.close()
        backend.stop()
        broker.stop()
    delivered = {point["name"]: point for point in stub.delivered}
    assert delivered["orders.placed.shop_eu"]["value"] == 2
    assert delivered["orders.load"]["count"] == 1
    assert delivered["orders.load"]["source"] == "test"


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
