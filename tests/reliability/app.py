"""An instrumented application for the fault suite: records at a steady rate, reports JSON.

Run as ``python app.py --publish ADDR --rate N``. It prints one JSON object per line:
``{"ready": ...}`` once the broker has told it its subscriptions, a progress line every
second (events recorded, RSS, open descriptors), and, after ``stop`` on stdin (or
``--seconds``), ``{"final": ...}`` with the client's stats after ``close()`` and the
per-call cost of recording in each phase. A line ``phase NAME`` on stdin starts a new
phase (the tests use them for "before", "during" and "after" a fault).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

from zibrato import Zibrato

NAME = "reliability.app.events"


def rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def summary(per_call_ns: list[float]) -> dict[str, float]:
    if not per_call_ns:
        return {}
    ordered = sorted(per_call_ns)
    return {
        "chunks": len(ordered),
        "median_ns": statistics.median(ordered),
        "p99_ns": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ns": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--publish", required=True)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--linger", type=float, default=0.25)
    parser.add_argument("--chunk", type=int, default=50)
    args = parser.parse_args()

    z = Zibrato(publish=args.publish, linger=args.linger)
    z.incr("reliability.app.hello")
    z.flush(timeout=10.0)  # wait for the broker's subscriptions
    emit(ready=True, pid=os.getpid(), publisher=z.publisher.publisher_id)

    phase = ["start"]
    stop = threading.Event()

    def read_commands() -> None:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["phase"] and len(words) == 2:
                phase[0] = words[1]
            elif words[:1] == ["stop"]:
                break
        stop.set()

    if not args.seconds:
        threading.Thread(target=read_commands, daemon=True).start()
    latencies: dict[str, list[float]] = {}
    recorded = 0
    started = time.monotonic()
    next_report = started + 1.0
    chunk_period = args.chunk / args.rate
    incr = z.incr
    chunk = range(args.chunk)
    while not stop.is_set():
        now = time.monotonic()
        if args.seconds and now - started >= args.seconds:
            break
        began = time.perf_counter_ns()
        for _ in chunk:
            incr(NAME)
        elapsed = time.perf_counter_ns() - began
        recorded += args.chunk
        latencies.setdefault(phase[0], []).append(elapsed / args.chunk)
        if now >= next_report:
            next_report += 1.0
            emit(t=now, recorded=recorded, rss_kb=rss_kb(), fds=open_fds())
        pause = started + (recorded / args.chunk) * chunk_period - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    z.close()
    emit(
        final=True,
        recorded=recorded,
        stats=z.stats(),
        rss_kb=rss_kb(),
        latency={name: summary(values) for name, values in latencies.items()},
    )


if __name__ == "__main__":
    main()
