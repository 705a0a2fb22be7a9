"""Measure issue 11's workloads against the real servers and print what they hold.

Usage (after ``make test`` or ``make servers`` installed the servers)::

    .venv/bin/python tests/realservers/figures.py
    PYTHONPATH=/path/to/an/older/checkout .venv/bin/python tests/realservers/figures.py

The second form measures another version of ``zibrato`` (the "before" figures). Workloads:
3 processes x 5 000 and 3 x 20 000 timings in one flush into Etsy statsd, and the carbon
"602 ticks" case (600 ticks over several flushes, 2 more just after a flush, then a stop).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from real_servers import CarbonCache, EtsyStatsd
from server_process import wait_received, wait_until

from zibrato import Zibrato
from zibrato.backends.graphite import GraphiteBackend
from zibrato.backends.statsd import StatsdBackend
from zibrato.broker import Broker

PUBLISH = Path(__file__).with_name("publish.py")


def publish(frontend: str, workload: dict[str, Any], processes: int = 3) -> int:
    """Run ``processes`` publishers at once; return how many events they sent."""
    running = [
        subprocess.Popen(
            [sys.executable, str(PUBLISH), frontend, json.dumps(workload)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    return sum(json.loads(p.communicate(timeout=120)[0])["sent_events"] for p in running)


def ready(backend: Any, frontend: str) -> None:
    probe = Zibrato(frontend)
    try:
        wait_until(lambda: backend.received_events > 0 or probe.incr("figures.probe"), "a probe")
    finally:
        probe.close()


def statsd_figure(per_process: int, **options: Any) -> str:
    with tempfile.TemporaryDirectory() as workdir:
        server = EtsyStatsd(Path(workdir), flush_ms=1000).start()
        broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
        frontend, backend_address = broker.start()
        backend = StatsdBackend(
            connect=backend_address, address=server.address, flush_interval=10.0, **options
        )
        try:
            backend.start()
            ready(backend, frontend)
            sent = publish(frontend, {"calls": [["timing", ["bulk.load", 0.012], {}, per_process]]})
            wait_received(backend, sent)
            # All of it goes in the first periodic flush (10 s after the start); then
            # give the pacing window (5 s) and statsd's own flush time to finish.
            assert backend.flushes == 0, "the workload straddled two flushes"
            wait_until(lambda: backend.flushes >= 1, "the first flush", 30)
            time.sleep(7)
            held = server.holds()
            errors = backend.target_errors
        finally:
            backend.stop()
            broker.stop()
            server.stop()
    count = held.timer_counts.get("bulk.load", 0)
    return (
        f"statsd, 3 x {per_process} timings in one flush {options or ''}: statsd count "
        f"{count:.6f} of {3 * per_process}, values held {len(held.timers.get('bulk.load', []))}, "
        f"bad lines {held.counter('statsd.bad_lines_seen'):g}, backend health arrived: "
        f"{'yes' if held.counter('zibrato.backend.events.backend.statsd') else 'NO'}, "
        f"target errors {errors}"
    )


def carbon_figure() -> str:
    with tempfile.TemporaryDirectory() as workdir:
        carbon = CarbonCache(Path(workdir)).start()
        broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
        frontend, backend_address = broker.start()
        backend = GraphiteBackend(
            connect=backend_address, address=carbon.address, flush_interval=1.0
        )
        try:
            backend.start()
            ready(backend, frontend)
            ticks = {"calls": [["incr", ["ticks", 1], {}, 1], ["sleep", [0.005], {}, 1]]}
            sent = publish(frontend, {**ticks, "repeat": 200})
            wait_received(backend, sent)
            flushes = backend.flushes
            wait_until(lambda: backend.flushes > flushes, "a periodic flush", 10)
            late = Zibrato(frontend)
            late.incr("ticks", 2)
            late.close()
            wait_received(backend, sent + 1)
            backend.stop()
            time.sleep(3)  # carbon writes its cache within a second or two
            stored = carbon.total("ticks.count")
            points = len(carbon.points("ticks.count"))
        finally:
            backend.stop()
            broker.stop()
            carbon.stop()
    return f"carbon, 602 ticks over {points} points: whisper holds {stored:g} of 602"


def main() -> None:
    """Print one line per workload."""
    import zibrato

    print(f"zibrato from {Path(zibrato.__file__).parent}", flush=True)
    for per_process in (5_000, 20_000):
        print(statsd_figure(per_process), flush=True)
    if "max_sent_values" in inspect.signature(StatsdBackend.__init__).parameters:
        print(statsd_figure(20_000, max_sent_values=0), flush=True)  # pacing alone
    print(carbon_figure(), flush=True)


if __name__ == "__main__":
    main()
