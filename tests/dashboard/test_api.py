"""The JSON API under /api/ and the page's files, over real HTTP."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from dashboard_support import (
    REQUEST,
    LiveSite,
    emit,
    get_json,
    record_request,
    request_events,
    routes_by_name,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zibrato.backends import BackendConfigError, build
from zibrato.backends.dashboard import DashboardBackend

NOW = time.time()


@pytest.fixture
def shop(make_dashboard: Callable[..., DashboardBackend]) -> DashboardBackend:
    """Three flushes of 10 s ending at NOW: /products/ (N+1), /slow/, /boom/ (failing)."""
    backend = make_dashboard(flush_interval=10.0)
    for n, ts in enumerate((NOW - 20, NOW - 10, NOW)):
        events = []
        for i in range(20):
            events += request_events(
                "/products/", 0.02 + i / 1000, view=0.015, queries=22, duplicates=20
            )
        events += request_events("/slow/", 0.8 + n / 10, view=0.75, queries=2)
        if n != 1:  # /boom/ is quiet in the middle flush
            events += request_events("/boom/", 0.05, status="500", view=0.04, queries=1)
            events += request_events("/boom/", 0.01, view=0.005, queries=1)
        events.append((0, "orders.placed", 2, None, {"shop": "eu"}))
        events += [(5, "shoppers", f"user-{i % (n + 2)}", None, {}) for i in range(10)]
        emit(backend, ts, 10.0, events)
    return backend


def test_status_before_and_after_the_first_flush(
    make_dashboard: Callable[..., DashboardBackend],
) -> None:
    backend = make_dashboard(flush_interval=10.0)
    status = get_json(backend, "/api/status")
    assert (
        status["version"] == 1 and status["last_flush"] is None and status["flush_interval"] == 10.0
    )
    assert [t["step"] for t in status["tiers"]] == [0, 60, 600, 3600]
    emit(backend, NOW, 10.0, request_events("/a", 0.1))
    status = get_json(backend, "/api/status")
    assert status["last_flush"] == pytest.approx(NOW, abs=0.001)
    assert status["series"] == 3  # the request series, its route summary, its error count
    assert status["bytes"] > 0


def test_the_route_table_pools_statuses_and_counts_errors(shop: DashboardBackend) -> None:
    answer = get_json(shop, "/api/routes", window=300, end=NOW)
    assert answer["seconds"] == 30.0
    rows = routes_by_name(answer)
    assert set(rows) == {"/products/", "/slow/", "/boom/"}
    products, slow, boom = rows["/products/"], rows["/slow/"], rows["/boom/"]
    assert products["requests"] == 60 and products["rate"] == pytest.approx(2.0)
    assert products["duplicates"]["mean"] == 20 and products["queries"]["p95"] == 22
    assert products["error_ratio"] == 0
    assert boom["requests"] == 4 and boom["errors"] == 2 and boom["error_ratio"] == 0.5
    assert slow["latency"]["max"] == pytest.approx(1.0)
    # Each flush's route percentile is exact; over three flushes they are count-weighted.
    assert slow["latency"]["p50"] == pytest.approx(statistics.fmean([0.8, 0.9, 1.0]))
    per_flush = [
        statistics.quantiles([0.02 + i / 1000 for i in range(20)], n=100, method="inclusive")[94]
    ]
    assert products["latency"]["p95"] == pytest.approx(per_flush[0])
    assert products["view"]["p95"] == pytest.approx(0.015)


def test_route_charts_align_to_the_flushes_with_zeros_and_gaps(shop: DashboardBackend) -> None:
    answer = get_json(shop, "/api/route", route="/boom/", window=300, end=NOW)
    assert answer["t"] == pytest.approx([NOW - 20, NOW - 10, NOW], abs=0.001)
    lines = answer["lines"]
    assert lines["latency.rate"] == [0.2, 0, 0.2]  # quiet in the middle: zero requests
    assert lines["errors.rate"] == [0.1, 0, 0.1]
    assert lines["latency.p50"][1] is None  # and no latency to speak of
    assert lines["view.p95"][0] == pytest.approx(0.04 - 0.035 * 0.05)
    unknown = get_json(shop, "/api/route", route="/never/", window=300, end=NOW)
    assert unknown["lines"]["latency.rate"] == [0, 0, 0]


def test_the_explorer_lists_metrics_and_plots_one_line_per_tag_set(shop: DashboardBackend) -> None:
    metrics = {m["name"]: m for m in get_json(shop, "/api/metrics")["metrics"]}
    assert "http.server.request.errors" not in metrics  # route summaries are not raw metrics
    request = metrics[REQUEST]
    assert request["type"] == "timer" and request["series"] == 4
    assert request["tags"]["http.response.status_code"] == ["200", "500"]
    assert "p95" in request["stats"] and metrics["orders.placed"]["stats"] == ["rate", "sum"]
    answer = get_json(shop, "/api/series", name=REQUEST, stat="p50", window=300, end=NOW)
    assert len(answer["lines"]) == 4 and answer["more"] == 0
    assert answer["lines"][0]["tags"]["http.route"] == "/products/"  # the busiest first
    failed = get_json(
        shop,
        "/api/series",
        name=REQUEST,
        stat="count",
        tag="http.response.status_code=500",
        window=300,
        end=NOW,
    )
    (line,) = failed["lines"]
    assert line["values"] == [1, 0, 1] and line["label"].startswith("http.request.method=GET")
    orders = get_json(shop, "/api/series", name="orders.placed", stat="rate", window=300, end=NOW)
    assert orders["lines"][0]["values"] == [0.2, 0.2, 0.2]
    shoppers = get_json(shop, "/api/series", name="shoppers", stat="max", window=300, end=NOW)
    assert metrics["shoppers"]["type"] == "set" and shoppers["lines"][0]["values"] == [2, 3, 4]
    nothing = get_json(shop, "/api/series", name="no.such.metric", window=300, end=NOW)
    assert nothing["lines"] == []


def test_health_totals_and_lines(shop: DashboardBackend) -> None:
    emit(
        shop, NOW + 10, 10.0, [(0, "zibrato.publisher.dropped", 7, None, {"reason": "buffer_full"})]
    )
    answer = get_json(shop, "/api/health", window=300, end=NOW + 10)
    assert answer["totals"]["publisher_dropped"] == 7
    assert answer["lines"]["publisher_dropped"] == [0, 0, 0, 0.7]
    assert answer["history"]["series"] > 0 and answer["history"]["bytes"] > 0
    assert answer["drops"] == [{"by": "publisher", "reason": "buffer_full", "count": 7}]


def test_health_says_why_events_were_dropped_the_most_first(shop: DashboardBackend) -> None:
    dropped = "zibrato.publisher.dropped"
    emit(
        shop,
        NOW + 10,
        10.0,
        [
            (0, dropped, 2, "web-1", {"reason": "no_broker"}),
            (0, dropped, 3, "web-2", {"reason": "no_broker"}),  # sources together
            (0, dropped, 1, "web-1", {"reason": "invalid_value"}),
            (0, "zibrato.backend.dropped_series", 4, None, {"backend": "dashboard"}),
            (0, "zibrato.backend.history_failed_points", 0, None, {"backend": "dashboard"}),
        ],
    )
    answer = get_json(shop, "/api/health", window=300, end=NOW + 10)
    assert answer["drops"] == [
        {"by": "publisher", "reason": "no_broker", "count": 5},
        {"by": "dashboard", "reason": "dropped_series", "count": 4},
        {"by": "publisher", "reason": "invalid_value", "count": 1},
    ]
    before = get_json(shop, "/api/health", window=300, end=NOW)  # the window decides
    assert before["drops"] == []


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/routes", {"window": "soon"}, "window must be a number"),
        ("/api/routes", {"window": "0"}, "window must be between"),
        ("/api/routes", {"window": "nan"}, "window must be a number"),
        ("/api/routes", {"window": "inf"}, "window must be a number"),
        ("/api/routes", {"window": "\u0663\u0660"}, "window must be a number"),  # Arabic 30
        ("/api/routes", {"window": "\u00b2"}, "window must be a number"),
        ("/api/routes", {"window": "1_000"}, "window must be a number"),
        ("/api/health", {"end": "1e308"}, "end must be between"),
        ("/api/route", {}, "name a route"),
        ("/api/series", {}, "name a metric"),
        ("/api/series", {"name": REQUEST, "stat": "sum"}, "stat must be one of"),
        ("/api/series", {"name": REQUEST, "tag": "novalue"}, "tag filters are KEY=VALUE"),
    ],
)
def test_bad_queries_are_400_with_a_reason(
    shop: DashboardBackend, path: str, params: dict[str, str], message: str
) -> None:
    with requests.get(shop.url.rstrip("/") + path, params=params, timeout=5) as response:
        assert response.status_code == 400
        assert message in response.json()["error"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["/api/routes", "/api/route", "/api/series", "/api/health", "/api/metrics"]),
    st.dictionaries(
        st.sampled_from(["window", "end", "route", "name", "stat", "tag", "type"]),
        st.text(max_size=30),
        max_size=5,
    ),
)
def test_no_query_makes_the_api_fail(
    shop: DashboardBackend, path: str, params: dict[str, str]
) -> None:
    with requests.get(shop.url.rstrip("/") + path, params=params, timeout=5) as response:
        assert response.status_code in (200, 400), response.text
        response.json()


def test_the_page_and_its_files_carry_a_strict_policy(
    make_dashboard: Callable[..., DashboardBackend],
) -> None:
    backend = make_dashboard()
    with requests.get(backend.url, timeout=5) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(
            "text/html"
        )
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert '<script src="/static/dashboard.js"' in response.text
        assert "<script>" not in response.text and "style=" not in response.text
    for path, kind in (
        ("static/uPlot.iife.min.js", "text/javascript"),
        ("static/uPlot.min.css", "text/css"),
        ("static/uPlot.LICENSE.txt", "text/plain"),
        ("static/dashboard.js", "text/javascript"),
    ):
        with requests.get(backend.url + path, timeout=5) as response:
            assert response.status_code == 200 and response.headers["Content-Type"].startswith(kind)
            assert response.headers["Content-Security-Policy"]
    with requests.get(backend.url + "static/uPlot.LICENSE.txt", timeout=5) as response:
        assert "MIT" in response.text and "Leon Sorokin" in response.text
    with requests.get(backend.url + "static/../backend.py", timeout=5) as response:
        assert response.status_code == 404
    with requests.get(backend.url, headers={"Host": "attacker.example"}, timeout=5) as response:
        assert response.status_code == 403  # a DNS-rebinding page cannot read the API


def test_built_from_plain_data_as_the_adapters_do(tmp_path: Path) -> None:
    (backend,) = build(
        [
            {
                "kind": "dashboard",
                "listen": "127.0.0.1:0",
                "path": str(tmp_path / "h.sqlite3"),
                "history-days": "1",
            }
        ],
        flush=5,
    )
    assert isinstance(backend, DashboardBackend)
    assert backend.store.tiers[-1].keep == 86400 and backend.flush_interval == 5
    with pytest.raises(BackendConfigError, match="history-days must be a positive number"):
        build([{"kind": "dashboard", "history-days": "0"}])
    with pytest.raises(BackendConfigError, match="listen must be HOST:PORT"):
        build([{"kind": "dashboard", "listen": "8050"}])


def test_end_to_end_through_a_broker_and_history_survives_a_restart(
    site: LiveSite, tmp_path: Path
) -> None:
    for i in range(30):
        record_request(
            site.client, "/products/", 0.02 + i / 1000, view=0.01, queries=21, duplicates=19
        )
    record_request(
        site.client, "/boom/", 0.05, status=500, error="ZeroDivisionError", view=0.04, queries=1
    )
    site.client.flush(timeout=5)

    def routes() -> dict[str, dict[str, Any]]:
        return routes_by_name(site.api("/api/routes", window=600))

    found = wait_for(
        routes,
        lambda rows: rows.get("/products/", {}).get("requests") == 30 and "/boom/" in rows,
        "both routes in the table",
    )
    assert found["/boom/"]["error_ratio"] == 1.0
    assert found["/products/"]["duplicates"]["mean"] == 19
    health = wait_for(
        lambda: site.api("/api/health", window=600),
        lambda answer: answer["totals"].get("events", 0) >= 30 * 5,
        "the events counted in the health",
    )
    assert health["totals"]["lost_events"] == 0
    site.dashboard.stop()
    again = DashboardBackend(
        connect=site.dashboard.connect,
        listen="127.0.0.1:0",
        path=site.dashboard.store.path,
        flush_interval=60,
    )
    again.start()
    try:
        rows = routes_by_name(get_json(again, "/api/routes", window=600))
        assert rows["/products/"]["requests"] == 30 and rows["/boom/"]["errors"] == 1
    finally:
        again.stop()
