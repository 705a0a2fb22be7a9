"""How big the dashboard's SQLite history grows, and what a flush costs to store.

Replays DAYS of a web site through the real `DashboardBackend.emit` (route summaries,
SQLite writes, downsampling) on a simulated clock, one rollup per FLUSH seconds, with the
statistics the aggregator computes. The site: ROUTES routes, RATE requests/s in all,
spread over the routes by a Zipf law (route k gets a share proportional to 1/k), each
request recording the metrics of DESIGN §4 (request and view duration by method and
status, queries, duplicates and DB time per request); 5 routes fail now and then.
`--busy` gives every route at least one request in every flush: the worst case.

Usage: python bench/dashboard_history.py [--days 7] [--routes 50] [--rate 20] [--flush 10]
       [--busy]
Prints the file size after each simulated day, how long the page's API calls take on the
result, and the median and worst time of one `emit` (a flush's write, and a compaction
when one is due).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
import time

from zibrato.aggregation import Rollup, Series, distribution_stats
from zibrato.backends.dashboard import DashboardBackend
from zibrato.backends.dashboard.routes import DB_TIME, DUPLICATES, QUERIES, REQUEST, VIEW
from zibrato.backends.toolkit.httpserver import Request


def site_rollup(
    rng: random.Random, now: float, flush: float, weights: list[float], busy: bool
) -> Rollup:
    """One flush of the simulated site, as the aggregator would roll it up."""
    series: list[Series] = []
    for index, weight in enumerate(weights):
        route = f"/shop/section-{index}/<int:id>/"
        count = max(1, _poisson(rng, weight)) if busy else _poisson(rng, weight)
        if not count:
            continue
        groups: dict[tuple[str, str], list[float]] = {}
        views, queries, duplicates, db_times = [], [], [], []
        for _ in range(count):
            method = "POST" if index % 5 == 4 and rng.random() < 0.3 else "GET"
            failed = index < 5 and rng.random() < 0.02
            status = "500" if failed else ("302" if method == "POST" else "200")
            view = rng.lognormvariate(math.log(0.02 + index / 1000), 0.6)
            groups.setdefault((method, status), []).append(view + rng.uniform(0.001, 0.004))
            views.append(view)
            n = rng.randint(2, 6) + (20 if index % 7 == 0 else 0)  # some routes are N+1
            queries.append(n)
            duplicates.append(n - 4 if n > 20 else 0)
            db_times.append(view * 0.4)
        for (method, status), values in groups.items():
            tags = {"http.route": route, "http.request.method": method}
            tags["http.response.status_code"] = status
            if status == "500":
                tags["error.type"] = "ValueError"
            series.append(_timed(REQUEST, "timer", tags, values))
        base = {"http.route": route, "http.request.method": "GET"}
        series.append(_timed(VIEW, "timer", base, views))
        alias = {"http.route": route, "db.namespace": "default"}
        series.append(_timed(QUERIES, "distribution", alias, queries))
        series.append(_timed(DUPLICATES, "distribution", {"http.route": route}, duplicates))
        series.append(_timed(DB_TIME, "timer", alias, db_times))
    for name, kind, value in (
        ("zibrato.backend.events", "counter", len(series) * 40.0),
        ("zibrato.backend.lost_events", "counter", 0),
        ("zibrato.backend.target_errors", "counter", 0),
        ("zibrato.backend.history_capped_points", "counter", 0),
        ("zibrato.backend.history_failed_points", "counter", 0),
        ("zibrato.backend.series", "gauge", len(series)),
        ("zibrato.backend.flush_seconds", "gauge", rng.uniform(0.005, 0.02)),
    ):
        stats = {"sum": value, "rate": value / flush} if kind == "counter" else {"value": value}
        series.append(Series(name, kind, None, {"backend": "dashboard"}, stats))
    return Rollup(now, flush, tuple(series))


def _timed(name: str, kind: str, tags: dict[str, str], values: list[float]) -> Series:
    ordered = sorted(values)
    return Series(name, kind, None, tags, distribution_stats(ordered), ordered)


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means of one route in one flush.
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def api_timings(backend: DashboardBackend, end: float) -> None:
    """Print how long the page's API calls take on the history just written."""
    api = backend.api
    route = "/shop/section-0/<int:id>/"
    for window in (3600, 21600, 7 * 86400):
        span = [str(window)]
        calls = {
            "routes (5 min)": ("/api/routes", {"window": ["300"]}),
            "route charts": ("/api/route", {"route": [route], "window": span}),
            "explorer": ("/api/series", {"name": [REQUEST], "stat": ["p95"], "window": span}),
            "health": ("/api/health", {"window": span}),
        }
        parts = []
        for label, (path, query) in calls.items():
            request = Request(path, {**query, "end": [str(end)]})
            began = time.perf_counter()
            response = api.routes()[path](request)
            assert response.status == 200, response.body[:200]
            parts.append(f"{label} {(time.perf_counter() - began) * 1000:.0f} ms")
        print(f"API over {window / 3600:g} h: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s over all routes")
    parser.add_argument("--flush", type=float, default=10.0)
    parser.add_argument("--busy", action="store_true", help="every route in every flush")
    args = parser.parse_args()
    harmonic = sum(1 / k for k in range(1, args.routes + 1))
    per_flush = args.rate * args.flush
    weights = [per_flush / (k * harmonic) for k in range(1, args.routes + 1)]
    rng = random.Random(8)
    path = os.path.join(tempfile.mkdtemp(prefix="zibrato-dashboard-bench-"), "history.sqlite3")
    backend = DashboardBackend(path=path, listen="127.0.0.1:0", flush_interval=args.flush)
    backend.store.open()
    start = time.time() - args.days * 86400
    flushes = round(args.days * 86400 / args.flush)
    per_day = round(86400 / args.flush)
    costs: list[float] = []
    print(
        f"{args.routes} routes, {args.rate:g} requests/s, flush every {args.flush:g} s"
        f"{' (busy: every route in every flush)' if args.busy else ''}; history at {path}"
    )
    try:
        for n in range(1, flushes + 1):
            rollup = site_rollup(rng, start + n * args.flush, args.flush, weights, args.busy)
            began = time.perf_counter()
            backend.emit(rollup)
            costs.append(time.perf_counter() - began)
            if n % per_day == 0 or n == flushes:
                size = sum(
                    os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)
                )
                print(
                    f"day {n / per_day:5.2f}: {size / 1e6:7.2f} MB, "
                    f"{backend.store.series_count} series, points per tier "
                    f"{backend.store.point_counts()}",
                    flush=True,
                )
        api_timings(backend, start + flushes * args.flush)
    finally:
        backend.store.close()
    size = os.path.getsize(path)
    costs.sort()
    print(
        f"file after closing: {size / 1e6:.2f} MB; emit median "
        f"{statistics.median(costs) * 1000:.2f} ms, p99 {costs[int(len(costs) * 0.99)] * 1000:.2f}"
        f" ms, max {costs[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
