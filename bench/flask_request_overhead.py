"""Per-request cost of metrics instrumentation in Flask: bare Flask, Zibrato and
prometheus-flask-exporter, in one session.

Adapted from the shared Flask benchmark. The WSGI app is called in-process (no network) on
a trivial view, so the instrumentation's cost shows. Three copies of the same app (bare;
``Zibrato(app)`` publishing to a real broker subprocess with a draining subscriber,
request and view timing on; ``PrometheusMetrics(app, group_by="url_rule")``) take turns,
run after run, in a rotating order, so that a noisy machine slows them alike. Each
Zibrato run ends with a flush, so its publisher thread's work (checking, encoding,
sending) is counted too. Reported, in CPU time of the whole process (all its threads:
steadier than wall time on a shared machine) and in wall time: the median time per
request of each, and the median of the per-round ratios to bare Flask.

Usage: python bench/flask_request_overhead.py [REQUESTS_PER_RUN] [ROUNDS]
"""

import io
import os
import statistics
import sys
import time

from flask import Flask

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 101

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _zibrato_sink  # noqa: E402


def make_app():
    app = Flask(__name__)

    @app.route("/items/<int:pk>")
    def item(pk):
        return {"pk": pk}

    return app


def environ(i):
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/items/{i % 50}",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }


def start_response(status, headers, exc_info=None):
    assert status.startswith("200"), status


def timed_run(app, after=None):
    """Return the CPU and wall time per request (µs) of N requests, including ``after()``."""
    environs = [environ(i) for i in range(N)]
    cpu, wall = time.process_time(), time.perf_counter()
    for env in environs:
        b"".join(app(env, start_response))
    if after is not None:
        after()
    return (
        (time.process_time() - cpu) / N * 1e6,
        (time.perf_counter() - wall) / N * 1e6,
    )


def main():
    publish, stop_sink = _zibrato_sink.start()
    try:
        apps = {"bare": make_app()}
        finish = {}
        try:
            from zibrato_flask import Zibrato

            app = make_app()
            app.config["ZIBRATO_PUBLISH"] = publish
            Zibrato(app)
            apps["zibrato"] = app
            client = app.extensions["zibrato"].client()
            finish["zibrato"] = lambda: client.flush(timeout=5.0)
        except ImportError:
            print("zibrato_flask not importable: skipping it")
        try:
            from prometheus_flask_exporter import PrometheusMetrics

            app = make_app()
            PrometheusMetrics(app, group_by="url_rule")
            apps["prometheus-flask-exporter"] = app
        except ImportError:
            print("prometheus-flask-exporter not installed: skipping it")
        for name, app in apps.items():  # warm up: first requests, connections, caches
            for _ in range(3):
                timed_run(app, finish.get(name))
        samples = {name: [] for name in apps}
        names = list(apps)
        for round_ in range(ROUNDS):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                samples[name].append(timed_run(apps[name], finish.get(name)))
        if "zibrato" in apps:
            stats = apps["zibrato"].extensions["zibrato"].client().stats()
    finally:
        stop_sink()

    print(f"{N} requests per run, {ROUNDS} rounds, alternating; median per request:")
    for clock, index in (("CPU time (all threads of the process)", 0), ("wall time", 1)):
        print(f"{clock}:")
        bare = [sample[index] for sample in samples["bare"]]
        for name, runs in samples.items():
            values = [sample[index] for sample in runs]
            ratios = [value / base for value, base in zip(values, bare, strict=True)]
            print(
                f"  {name:<27} {statistics.median(values):7.2f} us/request   "
                f"x{statistics.median(ratios):.3f} of bare (median of per-round ratios)"
            )
    if "zibrato" in apps:
        print(
            f"  zibrato events sent: {stats['sent_events']}, dropped: {stats['dropped'] or 'none'}"
        )


if __name__ == "__main__":
    main()
