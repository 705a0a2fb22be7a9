"""Machine instructions per request, bare and instrumented, counted by valgrind: a figure
that a noisy machine cannot move.

On a shared 2-core machine the CPU time of one Django request varies by ±20 % between
processes and by tens of µs between batches, more than the overhead being measured. An
instruction count does not: each configuration runs in a child process under
``valgrind --tool=callgrind`` (every thread of it counted: the requests, and Zibrato's
publisher thread checking, encoding and sending what they recorded), twice, with a small
and a large number of requests; the difference divided by the difference in requests is
the count per request, with start-up, warm-up and the final flush cancelled out. The
broker and its draining subscriber run natively in subprocesses (valgrind does not follow
children). Instructions are not time (a cache miss or a system call costs more than its
count), so read this beside the timed benchmarks, not instead of them.

Usage: python bench/request_instructions.py [flask] [django] [SMALL LARGE]
(default: both frameworks, 200 and 1000 requests). Needs valgrind.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import _callgrind  # bench/: the script's own directory is on the path

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = {
    "flask": ("bare", "zibrato", "prometheus-flask-exporter"),
    "django": ("bare", "zibrato", "prometheus", "otel"),
}


# Requests per batch: the publisher's own timer is switched off and the benchmark sends a
# batch after every that many requests, so that no figure depends on timing (under
# valgrind, code runs some 50 times slower, and a 50 ms interval would hold that many
# times fewer requests). 20 is a worker serving about 400 requests/s.
REQUESTS_PER_BATCH = 20


def child(framework: str, mode: str, requests: int) -> None:
    """Serve ``requests`` requests in-process in one configuration (under valgrind)."""
    sys.path.insert(0, HERE)
    from zibrato.publisher import Publisher

    Publisher.__init__.__kwdefaults__["interval"] = 3600.0  # batches sent by the loop below
    if framework == "django":
        import django_request_overhead as django_bench

        finish = django_bench.configure(mode)
        try:
            # warm-up included; flushes zibrato
            django_bench.measure(mode, requests, 1, flush_every=REQUESTS_PER_BATCH, steady=True)
        finally:
            finish()
        return
    sys.argv[1:] = []  # flask_request_overhead reads its own arguments at import
    import _zibrato_sink
    import flask_request_overhead as flask_bench

    publish, stop = _zibrato_sink.start()
    try:
        app = flask_bench.make_app()
        after = None
        if mode == "zibrato":
            from zibrato_flask import Zibrato

            app.config["ZIBRATO_PUBLISH"] = publish
            Zibrato(app)
            client = app.extensions["zibrato"].client()
            after = lambda: client.flush(timeout=30.0)  # noqa: E731
        elif mode == "prometheus-flask-exporter":
            from prometheus_flask_exporter import PrometheusMetrics

            PrometheusMetrics(app, group_by="url_rule")
        for measured, count in enumerate((300, requests)):  # warm-up, then the measured
            if measured:
                steady()
            for i in range(count):
                b"".join(app(flask_bench.environ(i), flask_bench.start_response))
                if after is not None and i % REQUESTS_PER_BATCH == REQUESTS_PER_BATCH - 1:
                    after()
            if after is not None:
                after()
    finally:
        stop()


def steady() -> None:
    """Collect and freeze the warm heap: a full collection of it, whose moment depends on
    how the publisher thread's allocations interleave with the requests', would otherwise
    fall in some runs and not others (Flask's figure moved by 8 k instructions per
    request, 2 %, between runs of the same code)."""
    gc.collect()
    gc.freeze()


def instructions(framework: str, mode: str, requests: int) -> int:
    """Return the instructions (all threads) of one child run of ``requests`` requests."""
    return int(
        _callgrind.instructions(
            [sys.executable, os.path.abspath(__file__), "--child", framework, mode, str(requests)]
        )
    )


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--child"]:
        child(argv[2], argv[3], int(argv[4]))
        return
    if shutil.which("valgrind") is None:
        print("valgrind not found: skipping the instruction counts")
        return
    frameworks = [arg for arg in argv[1:] if arg in MODES] or list(MODES)
    sizes = [int(arg) for arg in argv[1:] if arg.isdigit()] or [200, 1000]
    small, large = sizes
    runs = [(fw, mode, n) for fw in frameworks for mode in MODES[fw] for n in (small, large)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(lambda run: instructions(*run), runs), strict=True))
    for framework in frameworks:
        per_request = {
            mode: (counts[framework, mode, large] - counts[framework, mode, small])
            / (large - small)
            for mode in MODES[framework]
        }
        bare = per_request["bare"]
        print(f"{framework}: instructions per request (all threads), {large} - {small} requests:")
        for mode, count in per_request.items():
            added = (count / bare - 1) * 100
            print(f"  {mode:<27} {count / 1000:9.1f} k   {added:+6.1f} % vs bare")


if __name__ == "__main__":
    main(sys.argv)
