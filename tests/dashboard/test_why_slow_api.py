"""Where each route's time goes, in the JSON API: the route table's dominant component, the
route's stacked breakdown, and its repeated statements (docs/dashboard.md)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from dashboard_support import (
    REPEATS,
    breakdown_events,
    emit,
    get_json,
    request_events,
    routes_by_name,
    statement_tags,
)

from zibrato.backends.dashboard import DashboardBackend

NOW = time.time()
SLOW_SQL = "SELECT … FROM shop_category WHERE shop_category.id = ? LIMIT ?"
REVIEWS_SQL = "SELECT … FROM shop_review WHERE shop_review.product_id = ?"


@pytest.fixture
def shop(make_dashboard: Callable[..., DashboardBackend]) -> DashboardBackend:
    """Two flushes: /recommendations/ waits for a service, /products/ runs an N+1 in two
    processes (sources), from a template."""
    backend = make_dashboard(flush_interval=10.0)
    category = statement_tags("/products/", SLOW_SQL, "shop/views.py", 42, "product_list",
                              template="shop/product_list.html")  # fmt: skip
    reviews = statement_tags("/products/", REVIEWS_SQL, "shop/views.py", 42, "product_list")
    for n, ts in enumerate((NOW - 10, NOW)):
        events = []
        for _ in range(4):
            events += request_events("/recommendations/", 0.2)
            events += breakdown_events(
                "/recommendations/", {"http.client": 0.156, "db": 0.004, "app": 0.04}
            )
        for runs in (24, 24, 12):
            events += request_events("/products/", 0.05, queries=runs * 2 + 1)
            events += breakdown_events("/products/", {"db": 0.03, "template": 0.015, "app": 0.005})
            events.append((4, REPEATS, runs, "web-1" if n else "web-2", category))
            events.append((4, REPEATS, runs, None, reviews))
        events += request_events("/quiet/", 0.001)  # no breakdown: an older process
        emit(backend, ts, 10.0, events)
    return backend


def test_the_route_table_names_the_dominant_component(shop: DashboardBackend) -> None:
    rows = routes_by_name(get_json(shop, "/api/routes", window=300, end=NOW))
    recommendations = rows["/recommendations/"]
    assert recommendations["dominant"]["component"] == "http.client"
    assert recommendations["dominant"]["share"] == pytest.approx(0.78)
    assert recommendations["breakdown"] == pytest.approx(
        {"http.client": 8 * 0.156, "db": 8 * 0.004, "app": 8 * 0.04}
    )
    assert rows["/products/"]["dominant"] == {"component": "db", "share": pytest.approx(0.6)}
    assert rows["/quiet/"]["dominant"] is None and rows["/quiet/"]["breakdown"] == {}


def test_the_route_breakdown_stacks_to_the_mean_request(shop: DashboardBackend) -> None:
    answer = get_json(shop, "/api/route", route="/recommendations/", window=300, end=NOW)
    lines = answer["lines"]
    assert lines["breakdown.http.client"] == pytest.approx([0.156, 0.156])
    assert lines["breakdown.cache"] == [0.0, 0.0]
    stacked = [
        sum(lines[f"breakdown.{c}"][i] for c in ("db", "http.client", "cache", "template", "app"))
        for i in range(2)
    ]
    assert stacked == pytest.approx(lines["latency.mean"])


def test_the_repeated_statements_of_a_route(shop: DashboardBackend) -> None:
    answer = get_json(shop, "/api/statements", route="/products/", window=300, end=NOW)
    assert len(answer["statements"]) == 2
    by_text = {row["statement"]: row for row in answer["statements"]}
    category = by_text[SLOW_SQL]  # two processes' series, one row
    assert category["requests"] == 6
    assert category["repeats"] == {"mean": pytest.approx(20.0), "max": 24}
    assert category["code"] == {"file": "shop/views.py", "line": "42", "function": "product_list"}
    assert category["template"] == {"name": "shop/product_list.html", "line": "7"}
    assert category["last_seen"] == pytest.approx(NOW, abs=0.001)
    assert by_text[REVIEWS_SQL]["template"] is None
    assert get_json(shop, "/api/statements", route="/nowhere/")["statements"] == []


def test_the_explorer_lists_the_new_metrics(shop: DashboardBackend) -> None:
    metrics = {m["name"]: m for m in get_json(shop, "/api/metrics")["metrics"]}
    assert metrics["http.server.request.breakdown"]["tags"]["component"] == [
        "app", "db", "http.client", "template",
    ]  # fmt: skip
    assert metrics[REPEATS]["tags"]["db.query.text"] == sorted([REVIEWS_SQL, SLOW_SQL])
    series = get_json(shop, "/api/series", name=REPEATS, stat="max", window=300, end=NOW)
    assert len(series["lines"]) == 3  # two sources of one statement, and the other


def test_a_statements_request_without_a_route_is_refused(shop: DashboardBackend) -> None:
    import requests

    with requests.get(shop.url + "api/statements", timeout=10) as response:
        assert response.status_code == 400 and "name a route" in response.text
