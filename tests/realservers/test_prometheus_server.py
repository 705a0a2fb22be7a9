"""The prometheus backend scraped by a real Prometheus (Debian's), asked over its HTTP API."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from real_servers import Prometheus
from server_process import PROMETHEUS, require, wait_received, wait_until

from zibrato.backends.prometheus import PrometheusBackend

pytestmark = pytest.mark.realserver

Publish = Callable[..., list[dict[str, Any]]]
PROMTOOL = PROMETHEUS.with_name("promtool")


@pytest.fixture
def scraped(
    broker: Any, started: Callable[..., Any], tmp_path: Path
) -> Iterator[tuple[PrometheusBackend, Prometheus]]:
    backend = started(
        PrometheusBackend(connect=broker.backend, listen="127.0.0.1:0", flush_interval=0.5),
        broker.frontend,
    )
    server = Prometheus(tmp_path, target=f"127.0.0.1:{backend.port}")
    try:
        yield backend, server.start()
    finally:
        server.stop()


def test_a_real_scrape_holds_exact_totals_from_three_processes(
    broker: Any, scraped: tuple[PrometheusBackend, Prometheus], publish: Publish
) -> None:
    backend, prometheus = scraped
    workload = {
        "calls": [
            ["incr", ["shop.orders", 1], {"tags": {"shop": "eu"}}, 1000],
            ["timing", ["shop.load", 0.007], {}, 100],
            ["observe", ["shop.items", 7], {}, 1],
            ["gauge", ["job:queue.depth", 5], {}, 1],  # ":" is for recording rules
            ["incr", ["odd", 1], {"tags": {"route": 'say "hi"\\\n/é'}}, 10],
        ]
    }
    reports = publish(broker.frontend, workload, workload, workload)
    wait_received(backend, sum(report["sent_events"] for report in reports))

    def labels(**extra: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"instance": prometheus.target, "job": "zibrato", **extra}.items()))

    prometheus.wait_query("shop_orders_total", {labels(shop="eu"): 3000})
    prometheus.wait_query("shop_load_seconds_count", {labels(): 300})
    prometheus.wait_query('shop_load_seconds_bucket{le="0.01"}', {labels(le="0.01"): 300})
    prometheus.wait_query("shop_items_count", {labels(): 3})
    prometheus.wait_query("job_queue_depth", {labels(): 5})
    prometheus.wait_query("odd_total", {labels(route='say "hi"\\\n/é'): 30})
    prometheus.wait_query("up", {labels(): 1})
    # Prometheus' own validator finds nothing to say about what it scraped.
    exposition = requests.get(backend.url, timeout=10).text
    result = subprocess.run(
        [str(require(PROMTOOL)), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout + result.stderr, result


def test_a_real_prometheus_scrapes_by_address_and_by_an_allowed_name_only(
    broker: Any, started: Callable[..., Any], tmp_path: Path
) -> None:
    """The Host check against DNS rebinding lets Prometheus in by address or listed name.

    One Prometheus, three jobs: by address (127.0.0.1:PORT), and by two names it cannot
    resolve, sent through the backend itself as an HTTP proxy so that the request carries
    the name: ``metrics.example`` (listed in allowed-hosts) and ``rebound.example`` (not).
    """
    backend = started(
        PrometheusBackend(
            connect=broker.backend,
            listen="127.0.0.1:0",
            flush_interval=0.5,
            allowed_hosts=["metrics.example"],
        ),
        broker.frontend,
    )
    prometheus = Prometheus(
        tmp_path,
        target=f"127.0.0.1:{backend.port}",
        proxied={"by_name": "metrics.example:9102", "rebound": "rebound.example:9102"},
    ).start()
    try:
        by_job = {(("job", "zibrato"),): 1, (("job", "by_name"),): 1, (("job", "rebound"),): 0}
        prometheus.wait_query("sum by (job) (up)", by_job)
        targets = prometheus.targets()
        assert targets["by_name"]["health"] == "up"
        assert targets["rebound"]["health"] == "down"
        assert "server returned HTTP status 403 Forbidden" in targets["rebound"]["lastError"]
        # Scraped by name, the series are all there; the refusals are counted in them.
        labels = (("backend", "prometheus"), ("instance", "metrics.example:9102"))
        prometheus.wait_query(
            'zibrato_backend_healthy{job="by_name"}', {(*labels, ("job", "by_name")): 1}
        )
        wait_until(
            lambda: prometheus.query('zibrato_backend_http_host_refusals_total{job="by_name"} > 0'),
            "the refusals counted in the backend's health",
        )
    finally:
        prometheus.stop()
