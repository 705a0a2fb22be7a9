"""Zibrato's Django overhead, paired: bare and instrumented batches alternate in one process.

A loaded machine moves absolute figures by ±50 % between runs; within one process, short
alternating batches of the two configurations see the same load. Each batch is charged
the CPU time of the main thread (the requests) and of Zibrato's publisher thread (which
checks, encodes and sends what the requests recorded), read from per-thread CPU clocks,
with a pause after the batch so that the publisher's work for it falls in its window.

Bare: no middleware and no DB hook. Instrumented: the middleware (request and view
timers, per-request DB metrics), the DB hook (a timer per query) and model signals,
publishing to a real broker with a draining subscriber.

Usage: python bench/django_paired.py [PAIRS] [BATCH]
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import django_request_overhead as bench  # noqa: E402

# Longer than the publisher's 50 ms batch interval: a batch's events are sent inside it.
DRAIN_PAUSE = 0.06


def thread_clock(name: str) -> Callable[[], float]:
    """Return a function reading the CPU time of the running thread called ``name``."""
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    assert thread.ident is not None
    clock = time.pthread_getcpuclockid(thread.ident)
    return lambda: time.clock_gettime(clock)


def main(argv: list[str]) -> None:
    pairs = int(argv[1]) if len(argv) > 1 else 40
    batch = int(argv[2]) if len(argv) > 2 else 200
    finish = bench.configure("zibrato")
    try:
        from django.conf import settings
        from django.core.handlers.wsgi import WSGIHandler
        from django.db import connection

        from zibrato_django import zibrato
        from zibrato_django.db import measure_query

        bench.measure("zibrato", 1, 1)  # migrate, create the row, start the client
        instrumented = WSGIHandler()
        middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = []
        bare = WSGIHandler()
        settings.MIDDLEWARE = middleware
        main_cpu = thread_clock("MainThread")
        publisher_cpu = thread_clock("zibrato-publisher")

        def run(app: WSGIHandler, hooked: bool) -> tuple[float, float]:
            wrappers = connection.execute_wrappers
            if hooked and measure_query not in wrappers:
                wrappers.append(measure_query)
            if not hooked and measure_query in wrappers:
                wrappers.remove(measure_query)
            main_before, publisher_before = main_cpu(), publisher_cpu()
            for i in range(batch):
                b"".join(app(bench.environ(i), bench.start_response))
            time.sleep(DRAIN_PAUSE)
            return (
                (main_cpu() - main_before) / batch * 1e6,
                (publisher_cpu() - publisher_before) / batch * 1e6,
            )

        bare_runs: list[tuple[float, float]] = []
        zibrato_runs: list[tuple[float, float]] = []
        for pair in range(pairs):
            if pair % 2:
                bare_runs.append(run(bare, False))
                zibrato_runs.append(run(instrumented, True))
            else:
                zibrato_runs.append(run(instrumented, True))
                bare_runs.append(run(bare, False))
        zibrato.flush(timeout=5)
        bare_main, bare_pub = (statistics.median(column) for column in zip(*bare_runs, strict=True))
        zib_main, zib_pub = (
            statistics.median(column) for column in zip(*zibrato_runs, strict=True)
        )
        added_main, added_pub = zib_main - bare_main, zib_pub - bare_pub
        base = bare_main + bare_pub
        print(
            f"Django, paired in one process ({pairs} pairs of {batch} requests), CPU per "
            f"request: bare {base:.1f} us; Zibrato adds {added_main:+.1f} us on the request "
            f"thread and {added_pub:+.1f} us on its publisher thread = "
            f"{(added_main + added_pub) / base * 100:+.1f} % "
            f"({added_main / base * 100:+.1f} % + {added_pub / base * 100:+.1f} %); "
            f"dropped {zibrato.stats()['dropped'] or 'nothing'}"
        )
    finally:
        finish()


if __name__ == "__main__":
    main(sys.argv)
