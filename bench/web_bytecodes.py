"""Bytecodes the calling thread runs per request, bare and with Zibrato: Flask and Django.

Timing a few microseconds of difference per request is at the mercy of a shared machine's
load; counting the Python bytecodes the request thread executes (``sys.settrace`` with
opcode events) is not: the same code gives the same count on any machine, so a change to
the adapters can be compared with the one before it exactly. What the count misses: C
code (Flask's and Django's C parts, the deque), and the publisher thread, which runs
apart (the timing benchmarks include it).

The apps are those of ``flask_request_overhead.py`` (a trivial view) and
``django_request_overhead.py`` (a view with 2 ORM queries on SQLite), warmed up first;
Zibrato publishes to a loopback port where nothing listens (its thread is not traced).

Usage: python bench/web_bytecodes.py [flask|django ...]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REQUESTS = 50
WARMUP = 200
NOBODY = "tcp://127.0.0.1:9"  # the discard port: nothing listens on loopback


def bytecodes_per_request(serve: Callable[[int], None]) -> float:
    """Return the bytecodes this thread runs per call of ``serve(i)``, on average."""
    count = 0

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return on_opcode

    def on_opcode(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "opcode":
            count += 1
        return on_opcode

    sys.settrace(on_call)
    try:
        for i in range(REQUESTS):
            serve(i)
    finally:
        sys.settrace(None)
    return count / REQUESTS


def report(framework: str, bare: Callable[[int], None], zibrato: Callable[[int], None]) -> None:
    for i in range(WARMUP):
        bare(i)
        zibrato(i)
    plain, instrumented = bytecodes_per_request(bare), bytecodes_per_request(zibrato)
    added = instrumented - plain
    print(
        f"{framework}: bare {plain:.0f} bytecodes per request; with Zibrato {instrumented:.0f} "
        f"({added:+.0f}, {added / plain * 100:+.1f} %)",
        flush=True,
    )


def flask() -> None:
    argv, sys.argv = sys.argv, sys.argv[:1]  # the module reads its own arguments
    import flask_request_overhead as bench

    sys.argv = argv
    from zibrato_flask import Zibrato

    bare, instrumented = bench.make_app(), bench.make_app()
    instrumented.config["ZIBRATO_PUBLISH"] = NOBODY
    Zibrato(instrumented)

    def serving(app: Any) -> Callable[[int], None]:
        return lambda i: b"".join(app(bench.environ(i), bench.start_response)) and None

    try:
        report("Flask (trivial view)", serving(bare), serving(instrumented))
    finally:
        instrumented.extensions["zibrato"].client().publisher.close(0)


def django() -> None:
    import django_request_overhead as bench

    finish = bench.configure("zibrato")
    try:
        from django.conf import settings
        from django.core.handlers.wsgi import WSGIHandler
        from django.db import connection

        from zibrato_django import zibrato
        from zibrato_django.db import measure_query

        bench.measure("zibrato", 1, 1)  # migrate, create the row, start the client
        instrumented = WSGIHandler()
        middleware, settings.MIDDLEWARE = settings.MIDDLEWARE, []
        bare = WSGIHandler()
        settings.MIDDLEWARE = middleware

        def serving(app: Any, hooked: bool) -> Callable[[int], None]:
            def serve(i: int) -> None:
                wrappers = connection.execute_wrappers
                if hooked and measure_query not in wrappers:
                    wrappers.append(measure_query)
                if not hooked and measure_query in wrappers:
                    wrappers.remove(measure_query)
                b"".join(app(bench.environ(i), bench.start_response))

            return serve

        report("Django (2 ORM queries)", serving(bare, False), serving(instrumented, True))
        zibrato.flush(timeout=5)
    finally:
        finish()


if __name__ == "__main__":
    for name in sys.argv[1:] or ["flask"]:
        {"flask": flask, "django": django}[name]()
