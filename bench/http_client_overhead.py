"""What an outgoing ``requests`` call costs with Zibrato's HTTP client metrics, and with
OpenTelemetry's requests instrumentation, over the bare call.

A ``requests.Session`` calls a local HTTP server (in the same process, on loopback) in
three configurations: **bare**; **zibrato**, each call made inside a request as a view
makes it (its ``http.client`` span, the call noted, the request recorded with its
breakdown and the call's event, published to a real broker with a draining subscriber,
so the publisher thread's work is counted); **otel**, OpenTelemetry's
``RequestsInstrumentor`` with the SDK's tracer (spans to an in-memory exporter) and
meter providers. The request's own events (its timer, its ``app`` part) are recorded in
the bare and otel configurations too, so only the call's part differs.

Two figures per configuration:

* ``instructions``: each configuration in a child under ``valgrind --tool=callgrind``
  (every thread), with a small and a large number of calls; the difference divided by
  the difference in calls is the count per call: steady on a noisy machine;
* ``µs``: alternating rounds of timed calls in one process, CPU time of the process per
  call (the server thread's share is the same in each), median of the per-round
  differences to bare.

Usage: python bench/http_client_overhead.py [ROUNDS CALLS] [--no-valgrind]
(default 21 rounds of 300 calls).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from time import perf_counter

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("bare", "zibrato", "otel")
VALGRIND_SLOWDOWN = 50  # see request_instructions.py: the publisher's batch interval


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the session reuses its connection
    disable_nagle_algorithm = True  # else each answer waits for a delayed ACK (40 ms)

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve() -> tuple[str, Callable[[], None]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://127.0.0.1:{server.server_address[1]}/", stop


def caller(mode: str, url: str, publish: str) -> Callable[[int], None]:
    """Return ``call(n)``: ``n`` requests, each making one outgoing call, in ``mode``."""
    import requests

    from zibrato.client import Zibrato
    from zibrato.framework import http_client, schema
    from zibrato.framework.units import RequestRecorder, RequestState, current_unit

    client = Zibrato(publish=publish)
    recorder = RequestRecorder(client, tags=schema.TagCache())
    if mode == "zibrato":
        http_client.install(outside=lambda: client)
    elif mode == "otel":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        tracer = TracerProvider()
        exporter = InMemorySpanExporter()
        tracer.add_span_processor(SimpleSpanProcessor(exporter))
        meter = MeterProvider(metric_readers=[InMemoryMetricReader()])
        RequestsInstrumentor().instrument(tracer_provider=tracer, meter_provider=meter)
    session = requests.Session()

    def call(n: int) -> None:
        for _ in range(n):
            state = RequestState()
            state.route = "shop/"
            token = current_unit.set(state)
            start = perf_counter()
            try:
                session.get(url, timeout=10).close()
            finally:
                current_unit.reset(token)
                recorder.record(state, "GET", perf_counter() - start)
        client.flush(timeout=30)
        if mode == "otel":
            exporter.clear()

    return call


def child(mode: str, calls: int) -> None:
    sys.path.insert(0, HERE)
    import _zibrato_sink

    from zibrato.publisher import Publisher

    Publisher.__init__.__kwdefaults__["interval"] *= VALGRIND_SLOWDOWN
    publish, stop_sink = _zibrato_sink.start()
    url, stop_server = serve()
    try:
        call = caller(mode, url, publish)
        call(50)  # warm-up: the connection, the caches
        call(calls)
    finally:
        stop_server()
        stop_sink()


def instructions(mode: str, calls: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             os.path.abspath(__file__), "--child", mode, str(calls)],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with open(out) as results:
            for line in results:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
    raise RuntimeError(f"no instruction total in callgrind's output for {mode}")


def timed(rounds: int, calls: int) -> dict[str, list[float]]:
    """CPU µs per call of each mode, round by round (modes alternate in one process)."""
    sys.path.insert(0, HERE)
    import _zibrato_sink

    publish, stop_sink = _zibrato_sink.start()
    url, stop_server = serve()
    try:
        # One process: install order matters, so bare and zibrato alternate first and
        # OpenTelemetry's wrapper goes over ours last (ours passes through then).
        from zibrato.framework import http_client

        bare, zibrato = caller("bare", url, publish), caller("zibrato", url, publish)
        per_call: dict[str, list[float]] = {mode: [] for mode in MODES}
        for warm in (bare, zibrato):
            warm(100)
        for number in range(rounds):
            pairs = [("bare", bare), ("zibrato", zibrato)]
            for mode, call in pairs if number % 2 else pairs[::-1]:
                if mode == "bare":
                    http_client.uninstall()
                else:
                    http_client.install(outside=lambda: None)
                start = time.process_time()
                call(calls)
                per_call[mode].append((time.process_time() - start) / calls * 1e6)
        http_client.uninstall()
        otel = caller("otel", url, publish)
        otel(100)
        for _ in range(rounds):
            start = time.process_time()
            otel(calls)
            per_call["otel"].append((time.process_time() - start) / calls * 1e6)
        return per_call
    finally:
        stop_server()
        stop_sink()


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--child"]:
        child(argv[2], int(argv[3]))
        return
    numbers = [int(arg) for arg in argv[1:] if arg.isdigit()]
    rounds, calls = numbers if len(numbers) == 2 else (21, 300)
    if "--no-valgrind" not in argv and shutil.which("valgrind"):
        counts = {(mode, n): instructions(mode, n) for mode in MODES for n in (50, 250)}
        per_call = {mode: (counts[mode, 250] - counts[mode, 50]) / 200 for mode in MODES}
        print("instructions per call (all threads), 250 - 50 calls:")
        for mode in MODES:
            added = per_call[mode] - per_call["bare"]
            print(f"  {mode:<8} {per_call[mode] / 1000:8.1f} k   {added / 1000:+7.1f} k vs bare")
    per_call_us = timed(rounds, calls)
    bare = per_call_us["bare"]
    print(f"CPU µs per call, {rounds} rounds of {calls} calls (median; bare and zibrato paired):")
    for mode in MODES:
        values = per_call_us[mode]
        if mode == "zibrato":
            added = statistics.median(z - b for z, b in zip(values, bare, strict=True))
        else:
            added = statistics.median(values) - statistics.median(bare)
        print(f"  {mode:<8} {statistics.median(values):8.1f} µs   {added:+6.1f} µs vs bare")


if __name__ == "__main__":
    main(sys.argv)
