"""The prometheus backend scraped by a real Prometheus (Debian's), asked over its HTTP API."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from real_servers import Prometheus
from server_process import PROMETHEUS, require, wait_received

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
