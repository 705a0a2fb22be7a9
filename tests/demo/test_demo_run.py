"""``make run``'s composition on random ports: everything starts and answers, traffic from
both frameworks reaches the dashboard within two flushes, the page shows it in a real
browser, and Ctrl-C to the process group stops every process the demo started.

One demo runs for the whole module (starting one takes seconds); the last test stops it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from browser_support import WatchedPage, save_screenshot
from demo_support import (
    ON_RANDOM_PORTS,
    ROOT,
    RUNNING,
    DemoRun,
    copy_prepared,
    get_json,
    processes_of,
    wait_for,
)

WINDOW = 600
DJANGO_ROUTES = ("products/", "products/<int:pk>/", "recommendations/", "checkout/")
FLASK_ROUTES = ("/warehouses", "/stock/<int:product_id>", "/sync")
# `make screenshot` writes README's picture (docs/img/dashboard.png) with this test: then
# the demo flushes as `make run` does, and runs a few minutes so that the charts fill up.
SCREENSHOT = os.environ.get("ZIBRATO_SCREENSHOT")
FLUSH = 5.0 if SCREENSHOT else 2.0
CHART_POINTS = 48 if SCREENSHOT else 5

pytestmark = pytest.mark.timeout(240)


@dataclass
class Live:
    run: DemoRun
    urls: dict[str, str]

    def api(self, path: str, **params: object) -> dict[str, object]:
        return get_json(self.urls["dashboard"] + "api/" + path, **params)  # type: ignore[no-any-return]

    def routes(self) -> dict[str, dict[str, object]]:
        return {row["route"]: row for row in self.api("routes", window=WINDOW)["routes"]}  # type: ignore[index]

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {row["task"]: row for row in self.api("tasks", window=WINDOW)["tasks"]}  # type: ignore[index]


@pytest.fixture(scope="module")
def live(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = copy_prepared(prepared_data, tmp_path_factory.mktemp("demo-live"))
    run = DemoRun(*ON_RANDOM_PORTS, f"--flush={FLUSH}", data=data)
    try:
        yield Live(run, run.wait_running())
    finally:
        run.kill()


def test_traffic_from_both_frameworks_reaches_the_dashboard_within_two_flushes(
    live: Live,
) -> None:
    charts = wait_for(
        lambda: {
            route: live.api("route", route=route, window=WINDOW)
            for route in ("products/", "/warehouses")
        },
        lambda answer: all(any(chart["lines"]["latency.rate"]) for chart in answer.values()),
        "requests of products/ (Django) and /warehouses (Flask) in the dashboard",
    )
    assert live.run.running_at is not None
    for route, chart in charts.items():
        # The flushes that closed after the demo said it was running, in order.
        after = [
            rate
            for t, rate in zip(chart["t"], chart["lines"]["latency.rate"], strict=True)
            if t > live.run.running_at
        ]
        first = next(index for index, rate in enumerate(after) if rate)
        assert first < 2, f"{route} first appeared in flush {first + 1}: {after}"


def test_every_part_answers_where_the_demo_says(live: Live) -> None:
    lines = "\n".join(live.run.stdout)
    assert "open first: the dashboard, " + live.urls["dashboard"] in lines
    assert lines.count(RUNNING) == 1
    for url, text in (
        (live.urls["django"], "Zibrato coffee"),
        (live.urls["django"] + "products/?fixed=1", "Fixed"),
        (live.urls["flask"], "Warehouse"),
        (live.urls["dashboard"], "<html"),
        (live.urls["prometheus"], "http_server_request_duration_seconds"),
    ):
        with requests.get(url, timeout=10) as response:
            assert response.status_code == 200, url
            assert text in response.text, url
    # Each site runs under gunicorn with a master and two worker processes.
    commands = list(processes_of(live.run.data).values())
    for app in ("demo_site.wsgi:application", "demo_site.warehouse:create_app()"):
        assert sum(app in command for command in commands) == 3, commands
    # The Celery worker: its main process and two prefork children.
    assert sum("demo_site.worker" in command for command in commands) == 3, commands


def test_checkouts_send_tasks_that_the_tasks_table_shows_with_their_n_plus_one(
    live: Live,
) -> None:
    """Every checkout sends an order confirmation to the prefork worker (Kombu's SQLite
    transport); its N+1 shows per task, and its ?fixed=1 twin runs without one."""
    tasks = wait_for(
        live.tasks,
        lambda rows: (
            rows.get("shop.send_confirmation", {}).get("tasks", 0) >= 3
            and (rows["shop.send_confirmation"]["duplicates"] or {}).get("max", 0) >= 2
            and rows.get("shop.send_confirmation_fixed", {}).get("tasks", 0) >= 1
        ),
        "order confirmations run by the worker, an N+1 among them",
    )
    confirm, fixed = tasks["shop.send_confirmation"], tasks["shop.send_confirmation_fixed"]
    # The confirmation reads the order, the recent orders, then each one's product.
    assert confirm["queries"]["max"] == confirm["duplicates"]["max"] + 3
    assert fixed["duplicates"]["max"] == 0 and fixed["queries"]["max"] == 2
    assert confirm["failures"] == 0 and confirm["queue"]["max"] >= 0
    metrics = {entry["name"]: entry for entry in live.api("metrics")["metrics"]}  # type: ignore[index]
    published = metrics["celery.task.published"]["tags"]
    assert published["http.route"] == ["checkout/"]
    assert set(published["celery.task.name"]) == {
        "shop.send_confirmation",
        "shop.send_confirmation_fixed",
    }


def test_the_dashboard_finds_the_n_plus_one_the_slow_and_the_raising_routes(live: Live) -> None:
    routes = wait_for(
        live.routes,
        lambda rows: (
            set(DJANGO_ROUTES + FLASK_ROUTES) <= set(rows)
            and rows["checkout/"]["errors"] > 0
            and rows["/sync"]["errors"] > 0
            and rows["recommendations/"]["requests"] >= 10
        ),
        "every demo route, with failed checkouts and syncs",
    )
    products, warehouses = routes["products/"], routes["/warehouses"]
    # The N+1 lists: 24 products, 2 queries each; 8 warehouses, 1 each. (A cold cache in a
    # worker adds the navigation's category query to its first page: 50 then.)
    assert products["queries"]["max"] in (49, 50) and products["duplicates"]["max"] == 46
    assert warehouses["queries"]["max"] == 9 and warehouses["duplicates"]["max"] == 7
    assert routes["products/<int:pk>/"]["duplicates"]["max"] == 0
    # The recommendations wait for the recommendation service: a median of 150 ms.
    assert routes["recommendations/"]["latency"]["p50"] > 0.05
    assert 0 < routes["checkout/"]["error_ratio"] < 1
    metrics = {entry["name"]: entry for entry in live.api("metrics")["metrics"]}
    assert {"django-shop", "flask-warehouse"} <= set(
        metrics["http.server.request.duration"]["sources"]
    )
    assert metrics["shop.report.build"]["type"] == "timer"  # the 2013 decorators
    assert metrics["shop.report.views"]["type"] == "counter"
    assert metrics["http.server.exceptions"]["tags"]["error.type"] == [
        "PaymentDeclined",
        "SupplierTimeout",
    ]
    assert metrics["demo.traffic.requests"]["sources"] == ["traffic"]


def test_the_dashboard_says_why_recommendations_are_slow_and_what_products_repeats(
    live: Live,
) -> None:
    """The issue's two answers, without reading code: recommendations/ spends most of its
    time in http.client to the recommendation service; products/ repeats the category
    query, from the shop's view and the template line that issues it."""
    rows = wait_for(
        live.routes,
        lambda rows: (rows.get("recommendations/") or {}).get("dominant") is not None,
        "where recommendations/ spends its time",
    )
    dominant = rows["recommendations/"]["dominant"]
    assert dominant["component"] == "http.client" and dominant["share"] > 0.5, dominant
    statements = wait_for(
        lambda: live.api("statements", route="products/", window=WINDOW)["statements"],
        lambda found: any("shop_category" in row["statement"] for row in found),
        "the repeated statements of products/",
    )
    category = next(row for row in statements if "shop_category" in row["statement"])
    assert re.fullmatch(r"SELECT … FROM shop_category WHERE .* = \?.*", category["statement"])
    assert category["repeats"]["max"] == 24
    assert category["code"]["file"] == "demo_site/shop/views.py"
    assert category["code"]["function"] == "product_list"
    assert category["template"]["name"] == "shop/product_list.html"
    template = (ROOT / "demo_site/shop/templates/shop/product_list.html").read_text()
    line = template.splitlines()[int(category["template"]["line"]) - 1]
    assert "product.category.name" in line
    calls = live.api("metrics")["metrics"]
    client = next(entry for entry in calls if entry["name"] == "http.client.request.duration")
    assert client["tags"]["zibrato.route"] == ["recommendations/"]
    assert client["tags"]["server.address"] == ["127.0.0.1"]
    assert live.urls["recommendations"].endswith(":" + client["tags"]["server.port"][0])
    cache = next(entry for entry in calls if entry["name"] == "cache.request.calls")
    assert "default" in cache["tags"]["cache.alias"]


def test_prometheus_serves_both_sites_series(live: Live) -> None:
    def scrape() -> str:
        with requests.get(live.urls["prometheus"], timeout=10) as response:
            return response.text

    text = wait_for(
        scrape,
        lambda body: 'http_route="products/"' in body and 'http_route="/warehouses"' in body,
        "both sites' routes in /metrics",
    )
    assert 'source="django-shop"' in text and 'source="flask-warehouse"' in text


@pytest.mark.timeout(CHART_POINTS * FLUSH + 240)
def test_the_dashboard_page_shows_the_demo_in_a_browser(
    live: Live, browser_page: WatchedPage, tmp_path: Path
) -> None:
    page = browser_page.page
    page.goto(live.urls["dashboard"])
    page.select_option("#window", "300")
    shown = browser_page.wait_until(
        f"""() => {{
          const routes = (window.zibratoDashboard.rows || []).map((row) => row.route);
          return {list(DJANGO_ROUTES + FLASK_ROUTES)!r}.every((r) => routes.includes(r)) && routes;
        }}""",
        "the demo's routes in the table",
    )
    assert set(DJANGO_ROUTES + FLASK_ROUTES) <= set(shown)
    badges = page.eval_on_selector_all("#routes tr", "rows => rows.map(r => r.textContent)")
    assert any("products/" in row and "N+1" in row for row in badges), badges
    # The Tasks table beside the routes: the order confirmation and its N+1.
    browser_page.wait_until(
        """() => (window.zibratoDashboard.tasks?.rows || []).some(
              (row) => row.task === "shop.send_confirmation" && row.duplicates_mean >= 1)""",
        "the order confirmation's N+1 in the Tasks table",
        timeout=60,
    )
    tasks = page.eval_on_selector_all("#tasks tbody tr", "rows => rows.map(r => r.textContent)")
    assert any("shop.send_confirmation" in row and "N+1" in row for row in tasks), tasks
    page.click("#tasks tbody tr[data-task='shop.send_confirmation']")  # its charts, the N+1's
    # Where the time goes, in the table: recommendations/ waits for its service.
    goes_to = browser_page.wait_until(
        """() => { const row = document.querySelector("#routes tr[data-route='recommendations/']");
                   const text = row && row.lastChild.textContent;
                   return text && text.endsWith("http.client") && text; }""",
        "recommendations/ spending its time in http.client",
    )
    assert goes_to.endswith("http.client")
    # The page opens on the slowest route so far; chart the N+1 list, as README's picture
    # does: its breakdown (db, template) and the statement it repeats, with its line.
    before = page.evaluate("() => window.zibratoDashboard.draws.latency || 0")
    page.click("#routes tr[data-route='products/']")
    browser_page.wait_until(
        f"() => window.zibratoDashboard.draws.latency > {before}", "the N+1 route's charts"
    )
    assert page.eval_on_selector("#route-select", "select => select.value") == "products/"
    statements = browser_page.wait_until(
        """() => { const rows = [...document.querySelectorAll('#statements tbody tr')];
                   return rows.length >= 2 && rows.map(r => r.cells[0].textContent + " @ "
                     + r.cells[3].textContent); }""",
        "the repeated statements of products/",
    )
    assert any(
        "shop_category" in row and "demo_site/shop/views.py" in row and "product_list.html" in row
        for row in statements
    ), statements
    # Lines need a few flushes.
    browser_page.wait_until(
        f"() => window.zibratoDashboard.points.latency?.[1] >= {CHART_POINTS}"
        f" && window.zibratoDashboard.points.breakdown?.[0] >= {CHART_POINTS}",
        f"{CHART_POINTS} points on the route charts",
        timeout=CHART_POINTS * FLUSH + 60,
    )
    browser_page.assert_clean()
    target = Path(SCREENSHOT or tmp_path / "dashboard.png")
    shot = save_screenshot(page, target)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a page of tables and charts, not a blank one


def test_ctrl_c_to_the_process_group_stops_every_process(live: Live) -> None:
    started = processes_of(live.run.data)
    # The runner, 2 x 3 gunicorn, the recommendation service, the traffic.
    assert live.run.pid in started and len(started) >= 9, started
    os.killpg(live.run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert live.run.wait() == 0
    assert live.run.stdout[-1] == "zibrato demo: stopped", live.run
    assert not live.run.stderr, live.run.stderr
    assert processes_of(live.run.data) == {}
