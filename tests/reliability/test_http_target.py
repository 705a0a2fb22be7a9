"""R9 and R10 against real HTTP servers on loopback: a librato target that is down for five
minutes (on an injected clock), a redirect, and a canary token that must never show."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from reliability_support import Lines, broker_process, report, stop_process

from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.librato import LibratoBackend

CANARY = "canary-7f3a9c1e5b2d"
EMAIL = "ops@example.com"


@dataclass
class Librato:
    """A loopback HTTP server standing in for the Librato API; ``answer`` picks the reply."""

    answer: str = "ok"  # ok | 503 | 401 | 302 | 400 | hang
    received: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    server: ThreadingHTTPServer = field(init=False)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if owner.answer == "hang":
                    threading.Event().wait(2.0)
                    return
                if owner.answer == "ok":
                    owner.received.extend(json.loads(body)["gauges"])
                    self._reply(200)
                elif owner.answer == "302":
                    self._reply(302, Location=f"http://127.0.0.1:1/elsewhere?echo={CANARY}")
                else:
                    self._reply(int(owner.answer))

            def do_GET(self) -> None:  # what a followed redirect would turn into
                owner.requests += 1
                self._reply(200)

            def _reply(self, status: int, **headers: str) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def librato() -> Iterator[Librato]:
    server = Librato()
    yield server
    server.close()


class FakeClock:
    """The backend's clock and pause: retries and backoff take no real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> bool:
        self.now += seconds
        return False  # not stopping


def _rollup(clock: FakeClock, flush: int, series: int) -> Rollup:
    return Rollup(
        timestamp=1_700_000_000.0 + flush * 10,
        interval=10.0,
        series=tuple(
            Series(f"r9.s{i}", SeriesType.COUNTER, None, {}, {"sum": flush, "rate": flush / 10})
            for i in range(series)
        ),
    )


@pytest.mark.parametrize("max_buffer", [10_000, 200])
def test_r9_five_minutes_of_503_then_recovery(librato, max_buffer):
    """R9: within the buffer bound nothing is lost; beyond it the oldest are dropped, counted."""
    clock = FakeClock()
    backend = LibratoBackend(
        url=librato.url,
        email=EMAIL,
        token=CANARY,
        flush_interval=10.0,
        max_buffer=max_buffer,
        timeout=5.0,
        clock=clock,
        pause=clock.pause,
    )
    series, outage_flushes = 20, 30  # 30 flushes of 10 s: five minutes
    try:
        librato.answer = "503"
        for flush in range(outage_flushes):
            backend.emit(_rollup(clock, flush, series))
            clock.now += 10.0 - (clock.now % 10.0)
        failed_requests = librato.requests
        librato.answer = "ok"
        backend.emit(_rollup(clock, outage_flushes, series))
    finally:
        backend.close_target()
    produced = (outage_flushes + 1) * series
    assert len(librato.received) + backend.dropped_measurements == produced
    assert backend.buffered == 0
    if max_buffer >= produced:
        assert backend.dropped_measurements == 0
        assert sorted(p["measure_time"] for p in librato.received) == sorted(
            1_700_000_000 + flush * 10 for flush in range(outage_flushes + 1) for _ in range(series)
        )
    else:  # the newest were kept
        assert backend.dropped_measurements == produced - max_buffer
        assert min(p["measure_time"] for p in librato.received) > 1_700_000_000
    report(
        f"R9 librato 503 for 5 min (injected clock), buffer {max_buffer}: {failed_requests} "
        f"failed requests, then {len(librato.received)} of {produced} measurements delivered, "
        f"{backend.dropped_measurements} dropped (counted)"
    )


def test_a_redirect_is_a_counted_failure_not_a_get(librato, caplog):
    """Item 7: a 302 was followed into a GET without a body and the points counted as sent."""
    clock = FakeClock()
    backend = LibratoBackend(
        url=librato.url, email=EMAIL, token=CANARY, clock=clock, pause=clock.pause
    )
    librato.answer = "302"
    with caplog.at_level(logging.WARNING, logger="zibrato"):
        backend.emit(_rollup(clock, 1, 3))
    assert backend.sent_measurements == 0 and backend.buffered == 3  # kept for later
    assert backend.target_errors == 1 and librato.requests == 1  # no GET followed
    assert "HTTP 302" in caplog.text and "redirect" in caplog.text
    assert CANARY not in caplog.text  # the Location it echoed is scrubbed too
    librato.answer = "ok"
    backend.emit(_rollup(clock, 2, 3))
    assert backend.sent_measurements == 6
    backend.close_target()


def _closed_port() -> str:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("answer", ["401", "503", "302", "400", "hang", "refused"])
def test_r10_the_token_never_shows_in_a_log_an_error_or_a_repr(librato, caplog, answer):
    """R10: whatever the target does, the canary token appears nowhere we can see."""
    secrets = (CANARY, base64.b64encode(f"{EMAIL}:{CANARY}".encode()).decode())
    clock = FakeClock()
    librato.answer = answer
    backend = LibratoBackend(
        url=_closed_port() if answer == "refused" else librato.url,
        email=EMAIL,
        token=CANARY,
        timeout=0.3,
        flush_interval=1.0,
        clock=clock,
        pause=clock.pause,
    )
    with caplog.at_level(logging.DEBUG):  # urllib3 and requests included
        backend.emit(_rollup(clock, 1, 2))
        backend.close_target()
    seen = [caplog.text, repr(backend), str(backend), repr(backend.last_error)]
    seen += [str(backend.last_error), repr(backend.target_counters())]
    for text in seen:
        for secret in secrets:
            assert secret not in text, f"{answer}: the token leaked into {text[:200]!r}"
    assert backend.target_errors >= 1


def test_r10_the_token_never_shows_in_the_command_output(librato):
    """The CLI with debug logging on, against a target that refuses, fails and redirects."""
    librato.answer = "401"
    env = {"ZIBRATO_LIBRATO_TOKEN": CANARY}
    with broker_process() as broker:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "zibrato", "-v", "backend", "librato"),
                *("--connect", broker.backend, "--url", librato.url, "--email", EMAIL),
                *("--flush", "0.3", "--timeout", "0.5"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        lines = Lines(process)
        try:
            lines.wait_for("running", 30)
            for answer in ("401", "500", "302"):
                librato.answer = answer
                seen = librato.requests
                deadline = time.monotonic() + 10
                while librato.requests < seen + 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            stop_process(process)
            lines.join(5)
        out, err = "\n".join(lines.out), "\n".join(lines.err)
    mistake = subprocess.run(
        [
            *(sys.executable, "-m", "zibrato", "backend", "librato"),
            *("--url", "nonsense", "--email", EMAIL, "--token", CANARY),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert mistake.returncode == 2, mistake.stderr
    for text in (out, err, mistake.stdout, mistake.stderr):
        assert CANARY not in text
    assert librato.requests >= 2
    assert "refused the credentials" in err, err[-2000:]  # it did log the failures
