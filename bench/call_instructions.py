"""Machine instructions per recording call, every thread of the process counted: the
calling thread's append and the publisher thread's checking, encoding and sending of it,
beside prometheus_client keeping the same number in memory.

Each case runs in a child process under ``valgrind --tool=callgrind`` twice, with a small
and a large number of calls; the difference divided by the difference in calls is the
count per call, with start-up, warm-up and the final flush cancelled out, and the cost
of the benchmark's own loop (a case that only loops) taken away. The publisher's timed
wake-ups are switched off and the calling thread flushes every ``BATCH`` calls, so that
every run cuts its events into the same batches: the figure repeats run to run (a fixed
hash seed too). A broker and a subscriber draining every level run natively beside it
(valgrind does not follow children), so a Zibrato event makes the whole trip to the broker.

Usage: python bench/call_instructions.py [CASE ...] [SMALL LARGE]
(default: every case, 20 000 and 60 000 calls). Needs valgrind.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import _callgrind  # bench/: the script's own directory is on the path

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 2048  # events per batch: the publisher's largest, what a busy process sends
TAGS = {"shop": "eu", "tier": "gold"}

CASES = (
    "loop",
    "zibrato incr",
    "zibrato incr tags",
    "zibrato with timer",
    "zibrato timing",
    "zibrato observe",
    "prometheus Counter.inc",
    "prometheus labels().inc",
    "prometheus Histogram.time",
)


def make_call(case: str, publish: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """Return (one call of ``case``, what to run every BATCH calls and at the end)."""
    if case == "loop":
        return (lambda: None), (lambda: None)
    if case.startswith("prometheus"):
        return _prometheus_call(case), (lambda: None)
    from zibrato import Zibrato
    from zibrato.publisher import Publisher

    z = Zibrato(publisher=Publisher(publish, interval=3600.0))
    z.incr("bench.connected")
    z.flush(timeout=10.0)
    calls: dict[str, Callable[[], None]] = {
        "zibrato incr": lambda: z.incr("bench.counter"),
        "zibrato incr tags": lambda: z.incr("bench.counter", tags=TAGS),
        "zibrato timing": lambda: z.timing("bench.timing", 0.001),
        "zibrato observe": lambda: z.observe("bench.size", 7),
    }
    if case == "zibrato with timer":

        def timed() -> None:
            with z.timer("bench.timer"):
                pass

        return timed, (lambda: z.flush(timeout=10.0))
    return calls[case], (lambda: z.flush(timeout=10.0))


def _prometheus_call(case: str) -> Callable[[], None]:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    if case == "prometheus Counter.inc":
        return Counter("bench_counter", "c", registry=registry).inc
    if case == "prometheus labels().inc":
        labelled = Counter("bench_labelled", "c", ["shop", "tier"], registry=registry)
        return lambda: labelled.labels(**TAGS).inc()
    histogram = Histogram("bench_seconds", "h", registry=registry)

    def timed() -> None:
        with histogram.time():
            pass

    return timed


def child(case: str, calls: int, publish: str) -> None:
    """Make ``calls`` calls of ``case`` (under valgrind), flushing every BATCH."""
    call, flush = make_call(case, publish)
    for _ in range(2 * BATCH):  # warm-up: names and tags seen valid, caches filled
        call()
    flush()
    done = 0
    while done < calls:
        for _ in range(min(BATCH, calls - done)):
            call()
        done += BATCH
        flush()


def instructions(case: str, calls: int, publish: str) -> int:
    """Return the instructions (all threads) of one child run of ``calls`` calls."""
    return int(
        _callgrind.instructions(
            [sys.executable, os.path.abspath(__file__), "--child", case, str(calls), publish]
        )
    )


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--child"]:
        child(argv[2], int(argv[3]), argv[4])
        return
    if shutil.which("valgrind") is None:
        print("valgrind not found: skipping the instructions per call")
        return
    sys.path.insert(0, HERE)
    import _zibrato_sink

    cases = [arg for arg in argv[1:] if arg in CASES] or list(CASES)
    if "loop" not in cases:
        cases.insert(0, "loop")
    sizes = [int(arg) for arg in argv[1:] if arg.isdigit()] or [20_000, 60_000]
    small, large = sizes
    publish, stop = _zibrato_sink.start()
    try:
        runs = [(case, n) for case in cases for n in (small, large)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            totals = pool.map(lambda run: instructions(run[0], run[1], publish), runs)
            counts = dict(zip(runs, totals, strict=True))
    finally:
        stop()
    loop = (counts["loop", large] - counts["loop", small]) / (large - small)
    print(f"instructions per call (all threads), {large} - {small} calls, batches of {BATCH}:")
    for case in cases:
        if case == "loop":
            continue
        per_call = (counts[case, large] - counts[case, small]) / (large - small) - loop
        print(f"  {case:<28} {per_call:9.0f}")


if __name__ == "__main__":
    main(sys.argv)
