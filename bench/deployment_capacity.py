"""Deployment figures for docs/deployment.md: what one broker + backend process carries.

Two measurements, each with the broker and the backend(s) in one process of their own (as
``zibrato run`` runs them), fed by separate publisher processes over loopback TCP:

* ``capacity``: PUBLISHERS processes (200 by default), each recording RATE events/s (a
  mix of counters and timers over 20 series, tags included) for SECONDS; prints the events
  offered and delivered per second, every loss counted (publisher drops, lost events
  seen by the backend), and the CPU the broker + backend process used;
* ``cpu``: 1 000 000 events (counters and timers over 100 series) through a broker into
  each backend kind in turn, flushing every second, with the backend's target running in
  this script (a TCP reader for graphite, a UDP socket for statsd, an HTTP server that
  answers 200 for otlp and remote-write, a scrape every second for prometheus); prints the
  broker + backend process' CPU seconds per million events, beside ``sink``, a backend
  whose ``emit`` does nothing (the broker, decoding and aggregation alone).

Usage::

    python bench/deployment_capacity.py capacity [PUBLISHERS] [RATE] [SECONDS]
    python bench/deployment_capacity.py cpu [EVENTS] [KIND,KIND,...]

Loopback only; every process started is stopped; every wait is bounded.
"""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

from zibrato.aggregation import Rollup
from zibrato.backends.base import Backend

PUBLISHER = r"""
import json, sys, time
from zibrato import Zibrato
frontend, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
events, series = int(sys.argv[4]), int(sys.argv[5])
z = Zibrato(frontend, source="host-%d" % (int(sys.argv[6]) % 8))
z.incr("bench.ready")
z.flush(timeout=60)
print("ready", flush=True)
sys.stdin.readline()  # every publisher starts at once, once all of them are up
sent = 0
start = time.perf_counter()
while (events and sent < events) or (not events and time.perf_counter() - start < seconds):
    for i in range(100):
        name = "bench.s%d" % ((sent + i) % series)
        if i % 2:
            z.incr(name, tags={"route": "/r%d" % (i % 5)})
        else:
            z.timing(name + ".t", 0.001 * (i % 50), tags={"route": "/r%d" % (i % 5)})
    sent += 100
    if rate:
        ahead = sent / rate - (time.perf_counter() - start)
        if ahead > 0:
            time.sleep(ahead)
z.flush(timeout=30)
z.close(linger=10)
print(json.dumps({"sent": sent, "stats": z.stats()}))
"""


class SinkBackend(Backend):
    """Receives and aggregates like any backend; sends nothing."""

    kind = "sink"

    def emit(self, rollup: Rollup) -> None:
        pass


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- targets the backends send to, in this process ------------------------------------------
class HttpSink(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def start_targets(stop: threading.Event) -> dict[str, dict[str, Any]]:
    """Start a target for each kind; return the options that point each backend at it."""
    http_sink = HttpSink(("127.0.0.1", 0), _Ok)
    threading.Thread(target=http_sink.serve_forever, args=(0.1,), daemon=True).start()
    url = f"http://127.0.0.1:{http_sink.server_address[1]}"
    carbon = socket.socket()
    carbon.bind(("127.0.0.1", 0))
    carbon.listen()

    def read_carbon() -> None:
        carbon.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = carbon.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.2)
            while not stop.is_set():
                try:
                    if not conn.recv(1 << 16):
                        break
                except TimeoutError:
                    continue
            conn.close()

    threading.Thread(target=read_carbon, daemon=True).start()
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd.settimeout(0.2)

    def read_statsd() -> None:
        while not stop.is_set():
            try:
                statsd.recv(65536)
            except TimeoutError:
                continue

    threading.Thread(target=read_statsd, daemon=True).start()
    return {
        "sink": {},
        "jsonl": {"path": os.path.join(tempfile.mkdtemp(), "bench.jsonl")},
        "statsd": {"address": f"127.0.0.1:{statsd.getsockname()[1]}", "max_sent_values": 0},
        "graphite": {"address": f"127.0.0.1:{carbon.getsockname()[1]}"},
        "prometheus": {"listen": f"127.0.0.1:{free_port()}"},
        "otlp": {"endpoint": f"{url}/v1/metrics", "environ": {}},
        "remote-write": {"url": f"{url}/api/v1/write", "instance": "bench:1"},
    }


# -- the broker + backend process -----------------------------------------------------------
def serve(kinds: list[str], options: dict[str, dict[str, Any]], expected: int, pipe: Any) -> None:
    """Run the broker and the backends; report CPU and counts once ``expected`` arrived."""
    from zibrato.backends import load
    from zibrato.runner import Runner

    made = []
    for kind in kinds:
        cls = SinkBackend if kind == "sink" else load(kind)
        made.append(cls(flush_interval=1.0, **options.get(kind, {})))
    runner = Runner(made, frontend="tcp://127.0.0.1:0", backend_address="tcp://127.0.0.1:0")
    frontend, _ = runner.start()
    scrape = next((b for b in made if b.kind == "prometheus"), None)
    pipe.send(frontend)
    pipe.recv()  # "go": every publisher is connected and about to start
    before = os.times()
    done, last, still_since = False, -1, time.monotonic()
    while min(b.received_events for b in made) < expected:
        if scrape is not None:
            with urllib.request.urlopen(scrape.url) as page:  # what Prometheus does
                page.read()
        time.sleep(1.0 if scrape is not None else 0.2)
        done = done or (pipe.poll() and pipe.recv() == "done")
        received = min(b.received_events for b in made)
        if received != last:
            last, still_since = received, time.monotonic()
        elif done and time.monotonic() - still_since > 3:
            break  # the publishers are done and nothing more arrives: some was lost
    flushes = [b.flushes for b in made]
    while any(b.flushes < f + 2 for b, f in zip(made, flushes, strict=True)):
        time.sleep(0.05)  # two more flushes: everything received was sent on
    after = os.times()
    if not done:
        pipe.recv()  # "done"
    report = {
        "cpu": (after.user - before.user) + (after.system - before.system),
        "received": [b.received_events for b in made],
        "lost": [b._subscriber.losses.lost_events if b._subscriber else 0 for b in made],
        "target_errors": [b.target_errors for b in made],
    }
    runner.stop()
    pipe.send(report)


def publishers(
    frontend: str, count: int, rate: float, seconds: float, events: int, series: int, go: Any
) -> tuple[list[dict[str, Any]], float]:
    """Start ``count`` publishers, release them at once when all are connected (telling
    ``go``); return their reports and the seconds from the release to the last one's end."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PUBLISHER,
                frontend,
                *map(str, (rate, seconds, events, series, i)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    reports = []
    try:
        for proc in procs:  # Python starting 200 times takes a while on 2 cores
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go()
        released = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 600)
            reports.append(json.loads(out))
        return reports, time.monotonic() - released
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run(
    kinds: list[str],
    options: dict[str, dict[str, Any]],
    count: int,
    rate: float,
    seconds: float,
    events: int,
    series: int,
) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(
        target=serve, args=(kinds, options, events * count + count, theirs)
    )
    child.start()
    try:
        frontend = ours.recv()
        reports, elapsed = publishers(
            frontend, count, rate, seconds, events, series, lambda: ours.send("go")
        )
        ours.send("done")
        report = ours.recv() if ours.poll(300) else {}
    finally:
        child.join(30)
        if child.is_alive():
            child.terminate()
            child.join(10)
    return report, reports, elapsed


def capacity(count: int, rate: float, seconds: float) -> None:
    """Many publishers, paced, into one broker + a sink backend."""
    # The backend waits for everything the publishers will send: RATE x SECONDS each.
    per_publisher = int(rate * seconds) // 100 * 100
    report, reports, elapsed = run(
        ["sink"], {}, count, 0.0 if rate <= 0 else rate, seconds, per_publisher, 20
    )
    sent = sum(r["sent"] for r in reports)
    dropped = sum(sum(r["stats"]["dropped"].values()) for r in reports)
    received = report.get("received", [0])[0] - count  # less each publisher's ready probe
    print(
        f"capacity: {count} publishers x {rate:g} events/s for {seconds:g} s: {sent} sent in "
        f"{elapsed:.1f} s ({sent / elapsed:,.0f}/s offered), {received} received "
        f"({100 * received / max(sent, 1):.2f} %), publisher drops {dropped}, lost events "
        f"counted by the backend {report.get('lost', ['?'])[0]}, broker+backend CPU "
        f"{report.get('cpu', float('nan')):.1f} s ({100 * report.get('cpu', 0) / elapsed:.0f} % "
        "of one core)",
        flush=True,
    )


def cpu(events: int, kinds: list[str]) -> None:
    """CPU seconds per million events of each backend kind (broker included)."""
    stop = threading.Event()
    options = start_targets(stop)
    try:
        for kind in kinds:
            per_publisher = events // 2
            report, _, elapsed = run([kind], options, 2, 0.0, 0.0, per_publisher, 100)
            received = report.get("received", [0])[0] - 2
            print(
                f"cpu: {kind:13s} {received:>9} events in {elapsed:5.1f} s, broker+backend "
                f"{report.get('cpu', float('nan')):5.2f} s CPU = "
                f"{1e6 * report.get('cpu', 0) / max(received, 1):5.2f} s per million events "
                f"(lost {report.get('lost', ['?'])[0]}, target errors "
                f"{report.get('target_errors', ['?'])[0]})",
                flush=True,
            )
    finally:
        stop.set()


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    args = sys.argv[2:]
    if what == "capacity":
        capacity(
            int(args[0]) if args else 200,
            float(args[1]) if len(args) > 1 else 500.0,
            float(args[2]) if len(args) > 2 else 10.0,
        )
    else:
        kinds = (
            args[1] if len(args) > 1 else "sink,jsonl,statsd,graphite,prometheus,otlp,remote-write"
        ).split(",")
        cpu(int(args[0]) if args else 1_000_000, kinds)


if __name__ == "__main__":
    main()
