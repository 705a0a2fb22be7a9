"""Zibrato's Django overhead, paired: bare and instrumented batches alternate in one process.

A loaded machine moves absolute figures by ±50 % between runs; within one process, short
alternating batches of the two configurations see the same load, so the median of their
per-pair ratios is stable. Time is the process's CPU time (every thread, the publisher's
included), which other processes on the machine disturb less than wall time.

Bare: no middleware and no DB hook. Instrumented: the middleware (request and view
timers, per-request DB metrics), the DB hook (a timer per query) and model signals,
publishing to a real broker with a draining subscriber.

Usage: python bench/django_paired.py [PAIRS] [BATCH]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import django_request_overhead as bench  # noqa: E402


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

        bench.measure("zibrato", 1, 1)  # migrate, create the row, warm up
        instrumented = WSGIHandler()
        middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = []
        bare = WSGIHandler()
        settings.MIDDLEWARE = middleware

        def run(app: WSGIHandler, hooked: bool) -> float:
            if hooked and measure_query not in connection.execute_wrappers:
                connection.execute_wrappers.append(measure_query)
            if not hooked and measure_query in connection.execute_wrappers:
                connection.execute_wrappers.remove(measure_query)
            started = time.process_time()
            for i in range(batch):
                b"".join(app(bench.environ(i), bench.start_response))
            return (time.process_time() - started) / batch * 1e6

        ratios, bare_us, zibrato_us = [], [], []
        for pair in range(pairs):
            first_bare = pair % 2 == 0
            a = run(bare, False) if first_bare else run(instrumented, True)
            b = run(instrumented, True) if first_bare else run(bare, False)
            plain, hooked = (a, b) if first_bare else (b, a)
            bare_us.append(plain)
            zibrato_us.append(hooked)
            ratios.append(hooked / plain)
        zibrato.flush(timeout=5)
        print(
            f"Django, paired in one process ({pairs} pairs of {batch} requests): "
            f"bare {statistics.median(bare_us):.1f} us/request, "
            f"zibrato {statistics.median(zibrato_us):.1f} us/request, "
            f"median ratio {(statistics.median(ratios) - 1) * 100:+.1f} % "
            f"(quartiles {(statistics.quantiles(ratios, n=4)[0] - 1) * 100:+.1f} % .. "
            f"{(statistics.quantiles(ratios, n=4)[2] - 1) * 100:+.1f} %); "
            f"dropped {zibrato.stats()['dropped'] or 'nothing'}"
        )
    finally:
        finish()


if __name__ == "__main__":
    main(sys.argv)
