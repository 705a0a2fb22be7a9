"""The dashboard in a real headless Chromium, fed through a real broker by a Zibrato client."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from browser_support import WatchedPage, save_screenshot
from dashboard_support import LiveSite, record_request, routes_by_name, statement_tags, wait_for

# uPlot draws each line in its series' colour: counting those pixels proves data was drawn.
REQUESTS_BLUE = (129, 140, 248)
P99_RED = (248, 113, 113)  # drawn over p50 and p95, equal on a route with one request
COUNT_PIXELS = """([key, rgb, enough]) => {
  const canvas = document.querySelector("#chart-" + key + " canvas");
  if (!canvas) return 0;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let found = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) < 8 && Math.abs(data[i + 1] - rgb[1]) < 8
        && Math.abs(data[i + 2] - rgb[2]) < 8) found += 1;
  }
  return found >= enough ? found : 0;
}"""


CATEGORY_SQL = "SELECT … FROM shop_category WHERE shop_category.id = ? LIMIT ?"
CATEGORY = statement_tags(
    "/products/", CATEGORY_SQL, "shop/views.py", 42, "product_list", "shop/product_list.html"
)
HTTP_CLIENT_BLUE = (56, 189, 248)  # the breakdown's http.client band


def publish_shop(site: LiveSite, n: int = 0) -> None:
    """One batch of a small shop's traffic: an N+1 list, a slow page, a failing page."""
    z = site.client
    for i in range(12):
        seconds = 0.03 + i / 500
        record_request(
            z, "/products/", seconds, view=0.022 + i / 600, queries=23, duplicates=20,
            breakdown={"db": seconds * 0.7, "template": seconds * 0.2, "app": seconds * 0.1},
            repeats=[(CATEGORY, 22)],
        )  # fmt: skip
    for i in range(6):
        record_request(z, "/products/<int:id>/", 0.012 + i / 1000, view=0.008, queries=3)
    slow = 0.6 + (n % 5) / 20
    record_request(z, "/slow/", slow, view=0.55 + (n % 5) / 20, queries=2,
                   breakdown={"http.client": slow - 0.1, "db": 0.02, "app": 0.08})  # fmt: skip
    record_request(z, "/boom/", 0.02, status=500, error="ZeroDivisionError", view=0.015, queries=1)
    record_request(z, "/boom/", 0.01, view=0.006, queries=1)
    z.incr("orders.placed", 1 + n % 3, tags={"shop": "eu"})
    z.gauge("queue.depth", 10 + n % 7)
    z.flush(timeout=5)


def keep_publishing(
    site: LiveSite,
    page: WatchedPage,
    script: str,
    what: str,
    arg: Any = None,
    timeout: float = 30.0,
) -> Any:
    """Publish a batch every ~0.3 s until ``script(arg)`` is truthy in the page."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        publish_shop(site, n)
        n += 1
        value = page.page.evaluate(script, arg)
        if value:
            return value
        if time.monotonic() > deadline:
            state = page.page.evaluate("() => JSON.stringify(window.zibratoDashboard?.draws)")
            raise AssertionError(f"timed out waiting for {what}; draws {state}; {page.page_errors}")
        time.sleep(0.3)


def draws(page: WatchedPage, key: str) -> int:
    return int(page.page.evaluate("(key) => window.zibratoDashboard.draws[key] || 0", key))


def test_the_dashboard_shows_routes_and_draws_charts_that_follow_the_choices(
    site: LiveSite, browser_page: WatchedPage, tmp_path: Path
) -> None:
    publish_shop(site)
    wait_for(
        lambda: routes_by_name(site.api("/api/routes", window=600)),
        lambda rows: {"/products/", "/slow/", "/boom/"} <= set(rows),
        "the routes in the API",
    )
    page = browser_page.page
    page.goto(site.dashboard.url)
    page.select_option("#window", "300")  # 5 minutes: one point per flush
    browser_page.wait_until(
        "() => window.zibratoDashboard.ready && window.zibratoDashboard.rows.length >= 4",
        "the route table",
    )
    shown = page.eval_on_selector_all(
        "#routes td.route", "cells => cells.map(c => c.firstChild.textContent)"
    )
    assert {"/products/", "/products/<int:id>/", "/slow/", "/boom/"} <= set(shown)
    assert shown[0] == "/slow/"  # sorted by p95, slowest first
    badges = page.eval_on_selector_all("#routes tr", "rows => rows.map(r => r.textContent)")
    assert any("/products/" in row and "N+1" in row for row in badges)
    assert any("/slow/" in row and "slowest" in row for row in badges)
    # Where each route's time goes: the dominant component, by share of summed time.
    goes_to = dict(
        page.eval_on_selector_all(
            "#routes tr", "rows => rows.map(r => [r.dataset.route, r.lastChild.textContent])"
        )[1:]
    )
    assert goes_to["/slow/"].endswith("http.client") and goes_to["/products/"].endswith("db")

    # The chosen route (the slowest) is charted; lines need two flushes at least.
    keep_publishing(
        site,
        browser_page,
        "() => window.zibratoDashboard.points.latency?.[1] >= 2"
        " && window.zibratoDashboard.points.rate?.[0] >= 2",
        "two points on the route charts",
    )
    assert page.eval_on_selector("#route-select", "s => s.value") == "/slow/"
    assert (
        keep_publishing(
            site, browser_page, COUNT_PIXELS, "the requests line", ["rate", REQUESTS_BLUE, 20]
        )
        > 20
    )
    assert (
        keep_publishing(site, browser_page, COUNT_PIXELS, "the p99 line", ["latency", P99_RED, 20])
        > 20
    )
    # Where /slow/'s time goes, stacked: mostly the http.client band.
    assert (
        keep_publishing(
            site, browser_page, COUNT_PIXELS, "the breakdown", ["breakdown", HTTP_CLIENT_BLUE, 20]
        )
        > 20
    )
    stacked_top = page.evaluate(
        "() => window.zibratoDashboard.charts.breakdown.data[1].filter(v => v !== null)"
    )  # the app band's top: the whole mean request
    assert stacked_top and all(0.6 <= top <= 0.81 for top in stacked_top)

    # Choosing another route redraws its charts with its data.
    before = draws(browser_page, "rate")
    page.select_option("#route-select", "/products/")
    browser_page.wait_until(
        f"() => window.zibratoDashboard.draws.rate > {before}", "a redraw for /products/"
    )
    queries_p95 = page.evaluate(
        "() => window.zibratoDashboard.charts.queries.data[1].filter(v => v !== null)"
    )
    assert queries_p95 and set(queries_p95) == {23}
    # Its repeated statement: the SQL, the repeats per request, the code and the template.
    rows = browser_page.wait_until(
        """() => { const rows = [...document.querySelectorAll('#statements tbody tr')];
                   return rows.length && rows.map(r => [...r.cells].map(c => c.textContent)); }""",
        "the repeated statements of /products/",
    )
    assert rows[0][0] == CATEGORY_SQL and rows[0][1] == "22 (22)"
    assert rows[0][3] == (
        "shop/views.py:42 in product_listtemplate shop/product_list.html:7"
    )  # three spans: file:line, function, template
    assert not page.is_visible("#statements-empty")
    assert (
        page.eval_on_selector("#routes tr.selected td.route", "c => c.firstChild.textContent")
        == "/products/"
    )

    # Clicking a row charts that route too.
    before = draws(browser_page, "latency")
    page.click("#routes tr[data-route='/boom/']")
    browser_page.wait_until(
        f"() => window.zibratoDashboard.draws.latency > {before}", "a redraw for /boom/"
    )
    errors = page.evaluate(
        "() => window.zibratoDashboard.charts.rate.data[2].filter(v => v > 0).length"
    )
    assert errors >= 1

    # The explorer plots another metric when asked.
    before = draws(browser_page, "explorer")
    metric = page.eval_on_selector(
        "#metric-select",
        "s => Array.from(s.options).find(o => o.text === 'orders.placed (counter)').value",
    )
    page.select_option("#metric-select", metric)
    browser_page.wait_until(
        f"() => window.zibratoDashboard.draws.explorer > {before}", "the explorer redraw"
    )
    assert page.eval_on_selector("#stat-select", "s => s.value") == "rate"
    legend = page.eval_on_selector_all(
        "#chart-explorer .u-series .u-label", "ls => ls.map(l => l.textContent)"
    )
    assert "shop=eu" in legend or any("shop=eu" in label for label in legend)

    # A choice survives the refreshes that follow new flushes.
    page.select_option("#stat-select", "sum")
    refreshes = page.evaluate("() => window.zibratoDashboard.refreshes")
    keep_publishing(
        site,
        browser_page,
        f"() => window.zibratoDashboard.refreshes >= {refreshes + 2}",
        "refreshes",
    )
    assert page.eval_on_selector("#stat-select", "s => s.value") == "sum"
    assert page.eval_on_selector("#metric-select", "s => s.value") == "counter orders.placed"

    # Sorting by requests puts the busiest route first.
    page.click("#routes th[data-key='rate']")
    first = page.eval_on_selector("#routes tbody tr td.route", "c => c.firstChild.textContent")
    assert first == "/products/"

    # Live: a new route appears without reloading the page.
    record_request(site.client, "/checkout/", 0.2, view=0.1, queries=8)
    site.client.flush(timeout=5)
    browser_page.wait_until(
        "() => window.zibratoDashboard.rows.some(r => r.route === '/checkout/')", "the new route"
    )
    health = page.eval_on_selector("#card-events .card-value", "c => c.textContent")
    assert health not in ("\u2013", "0")  # a dash until there is a figure
    assert page.eval_on_selector("#status", "s => s.dataset.state") == "live"

    shot = save_screenshot(page, tmp_path / "dashboard.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    browser_page.assert_clean()


def test_text_a_peer_controls_is_shown_as_text_never_run(
    site: LiveSite, browser_page: WatchedPage
) -> None:
    evil_route = '<img src=x onerror="window.pwned=1">'
    evil_metric = "<b>bold</b>"
    evil_tag = "</option><script>window.pwned=2</script>"
    record_request(site.client, evil_route, 0.05, view=0.01, queries=1)
    site.client.incr(evil_metric, 1, tags={"k": evil_tag})
    site.client.flush(timeout=5)
    wait_for(
        lambda: routes_by_name(site.api("/api/routes", window=600)),
        lambda rows: evil_route in rows,
        "the forged route in the API",
    )
    page = browser_page.page
    page.goto(site.dashboard.url)
    browser_page.wait_until(
        "() => window.zibratoDashboard.ready && window.zibratoDashboard.rows.length >= 1",
        "the table",
    )
    shown = page.eval_on_selector("#routes td.route", "c => c.firstChild.textContent")
    assert shown == evil_route
    assert (
        page.evaluate("() => document.querySelectorAll('img[src=x], b, script:not([src])').length")
        == 0
    )
    options = page.eval_on_selector_all("#metric-select option", "os => os.map(o => o.text)")
    assert f"{evil_metric} (counter)" in options
    metric = page.eval_on_selector(
        "#metric-select",
        "(s, name) => Array.from(s.options).find(o => o.text === name).value",
        f"{evil_metric} (counter)",
    )
    page.select_option("#metric-select", metric)
    tags = page.eval_on_selector_all("#tag-select option", "os => os.map(o => o.text)")
    assert f"k={evil_tag}" in tags
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.pwned") is None
    browser_page.assert_clean()


def test_an_empty_dashboard_says_so(
    make_dashboard: Callable[..., Any], browser_page: WatchedPage
) -> None:
    backend = make_dashboard()
    page = browser_page.page
    page.goto(backend.url)
    browser_page.wait_until("() => window.zibratoDashboard.ready", "the first refresh")
    assert page.is_visible("#routes-empty")
    assert "waiting for the first flush" in page.text_content("#status-text")
    browser_page.assert_clean()


def test_the_dropped_card_says_why(site: LiveSite, browser_page: WatchedPage) -> None:
    """Events a publisher refuses are counted by reason; the red card names the reasons."""
    z = site.client
    record_request(z, "/products/", 0.03, view=0.02, queries=3)
    for _ in range(3):
        z.incr("orders.placed", float("nan"))  # refused by the publisher: invalid_value
    z.timing("orders.load", -1.0)  # negative_duration
    z.flush(timeout=5)
    wait_for(
        lambda: site.api("/api/health", window=600)["drops"],
        lambda drops: {d["reason"] for d in drops} >= {"invalid_value", "negative_duration"},
        "the drops in the API",
    )
    page = browser_page.page
    page.goto(site.dashboard.url)
    browser_page.wait_until(
        "() => document.querySelectorAll('#drop-reasons li').length >= 2", "the drop reasons"
    )
    reasons = page.eval_on_selector_all(
        "#drop-reasons li",
        "items => items.map(li => [...li.children].map(span => span.textContent))",
    )
    assert reasons[:2] == [
        ["3", "invalid_value", "publishers"],
        ["1", "negative_duration", "publishers"],
    ]
    assert page.eval_on_selector("#card-dropped .card-value", "c => c.textContent") == "4"
    assert page.eval_on_selector("#card-dropped", "c => c.classList.contains('alert')")
    assert not page.is_visible("#card-dropped .card-note")  # the reasons replace the note
    title = page.eval_on_selector("#drop-reasons li", "li => li.title")
    assert title == "zibrato.publisher.dropped{reason=invalid_value}"
    browser_page.assert_clean()


def publish_tasks(site: LiveSite, n: int = 0) -> None:
    """One batch of a worker's tasks: an N+1 confirmation (one in five fails), a report."""
    z = site.client
    for i in range(5):
        tags = {"celery.task.name": "shop.confirm", "celery.task.outcome": "success"}
        if i == 0:
            tags = {**tags, "celery.task.outcome": "failure", "error.type": "SMTPError"}
        z.timing("celery.task.duration", 0.02 + i / 500, tags=tags)
        z.incr("celery.task.outcomes", tags=tags)
        z.timing("celery.task.queue.duration", 0.01 * i, tags={"celery.task.name": "shop.confirm"})
        db = {"celery.task.name": "shop.confirm", "db.namespace": "default"}
        z.observe("db.client.task.queries", 11, tags=db)
        z.observe("db.client.task.duplicates", 9, tags={"celery.task.name": "shop.confirm"})
    report = {"celery.task.name": "shop.report", "celery.task.outcome": "success"}
    z.timing("celery.task.duration", 0.5 + (n % 3) / 10, tags=report)
    z.incr("celery.task.outcomes", tags=report)
    z.flush(timeout=5)


def test_the_tasks_table_and_a_tasks_charts(site: LiveSite, browser_page: WatchedPage) -> None:
    """The Tasks table and its charts, on the page beside the routes' parts (where each
    route's time goes, its repeated statements)."""
    publish_tasks(site)
    publish_shop(site)
    wait_for(
        lambda: site.api("/api/tasks", window=600)["tasks"],
        lambda rows: {row["task"] for row in rows} == {"shop.confirm", "shop.report"},
        "the tasks in the API",
    )
    page = browser_page.page
    page.goto(site.dashboard.url)
    page.select_option("#window", "300")
    browser_page.wait_until(
        "() => window.zibratoDashboard.tasks && window.zibratoDashboard.tasks.rows.length >= 2",
        "the tasks table",
    )
    rows = page.eval_on_selector_all("#tasks tbody tr", "rows => rows.map(r => r.textContent)")
    assert "shop.report" in rows[0]  # sorted by run time p95, slowest first
    confirm = next(row for row in rows if "shop.confirm" in row)
    assert "N+1" in confirm and "failed" in confirm and "20.0 %" in confirm
    assert page.is_hidden("#tasks-empty")
    # Both on one page: the routes' "Time goes to" and the chosen route's statements.
    goes_to = browser_page.wait_until(
        """() => { const row = document.querySelector("#routes tr[data-route='/slow/']");
                   const text = row && row.lastChild.textContent;
                   return text && text.endsWith("http.client") && text; }""",
        "where /slow/ spends its time",
    )
    assert goes_to.endswith("http.client")
    page.select_option("#route-select", "/products/")
    browser_page.wait_until(
        "() => document.querySelectorAll('#statements tbody tr').length >= 1",
        "the repeated statements of /products/",
    )

    # The slowest task is charted; choosing another charts it.
    deadline = time.monotonic() + 30
    while not page.evaluate("() => window.zibratoDashboard.points['task-rate']?.[0] >= 2"):
        assert time.monotonic() < deadline, "two points on the task charts"
        publish_tasks(site)
        time.sleep(0.3)
    assert page.eval_on_selector("#task-select", "s => s.value") == "shop.report"
    page.click("#tasks tbody tr[data-task='shop.confirm']")
    browser_page.wait_until(
        "() => window.zibratoDashboard.tasks.task === 'shop.confirm'"
        " && document.querySelector('#chart-task-queries canvas') !== null",
        "the chosen task's charts",
    )
    assert not browser_page.page_errors
