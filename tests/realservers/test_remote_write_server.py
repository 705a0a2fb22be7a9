"""The remote-write backend against a real Prometheus (Debian's 2.42, with
``--web.enable-remote-write-receiver``), read back through its HTTP query API: exact
values from three processes, then the faults of issue 20 with a proxy in front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy
from real_servers import Prometheus
from server_process import wait_received, wait_until

from zibrato.backends.remote_write import RemoteWriteBackend

pytestmark = pytest.mark.realserver

Publish = Callable[..., list[dict[str, Any]]]
Labels = tuple[tuple[str, str], ...]
INSTANCE = "host-a:1"
EVENTS = 'zibrato_backend_events_total{backend="remote-write"}'


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


def labels(**extra: str) -> Labels:
    return tuple(sorted({"instance": INSTANCE, "job": "zibrato", **extra}.items()))


def test_exact_values_from_three_processes(
    broker: Any, prometheus: Prometheus, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(
        RemoteWriteBackend(
            connect=broker.backend,
            url=prometheus.write_url,
            instance=INSTANCE,
            flush_interval=0.5,
        ),
        broker.frontend,
    )
    workload = {
        "source": "web-1",
        "calls": [
            ["incr", ["shop.orders", 1], {"tags": {"shop": "eu", "job": "batch"}}, 1000],
            ["timing", ["shop.load", 0.007], {}, 100],
            ["timing", ["shop.load", 0.3], {}, 10],
            ["observe", ["shop.items", 7], {}, 1],
            ["gauge", ["shop.depth", -42], {}, 1],
            ["incr", ["odd", 1], {"tags": {"route": 'say "hi"\\\n/é'}}, 10],
        ],
    }
    reports = publish(broker.frontend, workload, workload, workload)
    wait_received(backend, sum(report["sent_events"] for report in reports))

    web = {"source": "web-1"}
    # A tag called job is kept as exported_job, as a scrape would keep it.
    prometheus.wait_query(
        "shop_orders_total", {labels(shop="eu", exported_job="batch", **web): 3000}
    )
    prometheus.wait_query("shop_load_seconds_count", {labels(**web): 330})
    prometheus.wait_query(
        'shop_load_seconds_bucket{le=~"0.005|0.01|0.25|0.5|\\\\+Inf"}',
        {
            labels(le="0.005", **web): 0,
            labels(le="0.01", **web): 300,
            labels(le="0.25", **web): 300,
            labels(le="0.5", **web): 330,
            labels(le="+Inf", **web): 330,
        },
    )
    sums = prometheus.query("shop_load_seconds_sum")
    assert sums.keys() == {labels(**web)}
    assert sums[labels(**web)] == pytest.approx(300 * 0.007 + 30 * 0.3, rel=1e-12)
    prometheus.wait_query('shop_items_bucket{le="10.0"}', {labels(le="10.0", **web): 3})
    prometheus.wait_query('shop_items_bucket{le="5.0"}', {labels(le="5.0", **web): 0})
    prometheus.wait_query("shop_depth", {labels(**web): -42})
    prometheus.wait_query("odd_total", {labels(route='say "hi"\\\n/é', **web): 30})
    assert backend.target_counters()["rejected_samples"] == 0 and backend.target_errors == 0


def test_faults_lose_nothing_beyond_the_buffer_and_count_every_loss(
    broker: Any, tmp_path: Path, started: Callable[..., Any], publish: Publish
) -> None:
    """Down at start, 429 with Retry-After, 5xx, a slow and a hanging receiver, a 400, and
    an outage of 12 flushes (a minute at a 5 s flush, scaled down): the counter arrives
    exact, every flush's samples but the one refused with a 400 are stored, and that one's
    loss is itself in Prometheus."""
    server = Prometheus(tmp_path)
    proxy = FaultProxy("http://127.0.0.1:1")  # nothing there yet: down at start
    hits = {"calls": [["incr", ["faults.hits", 1], {}, 100]]}
    sent = 0
    try:
        backend = started(
            RemoteWriteBackend(
                connect=broker.backend,
                url=proxy.url + "/api/v1/write",
                instance=INSTANCE,
                flush_interval=0.25,
                timeout=0.5,
                backoff_base=0.05,
                backoff_cap=0.1,
            ),
            broker.frontend,
        )
        sent += sum(r["sent_events"] for r in publish(broker.frontend, hits))
        wait_until(lambda: backend.buffered > 0 and backend.flushes > 2, "flushes to wait")
        proxy.upstream = server.start().url
        server.wait_query("faults_hits_total", {labels(): sent})

        def deliver(*script: tuple[int, dict[str, str], float]) -> None:
            nonlocal sent
            proxy.script.extend(script)
            sent += sum(r["sent_events"] for r in publish(broker.frontend, hits))
            server.wait_query("faults_hits_total", {labels(): sent})
            assert not proxy.script

        deliver((429, {"Retry-After": "1"}, 0.0))
        retried = next(s for s in proxy.seen if s.status == 429)
        assert min(s.at for s in proxy.seen if s.at > retried.at) - retried.at >= 1.0
        deliver((500, {}, 0.0), (502, {}, 0.0), (503, {}, 0.0), (504, {}, 0.0))
        deliver((503, {}, 1.0))  # hangs past the 0.5 s timeout, then fails
        proxy.delay = 0.1  # slow, within the time one flush may take
        deliver()
        proxy.delay = 0.0

        # A 400 is never retried: that request's samples are dropped, counted.
        wait_until(lambda: backend.buffered == 0, "an empty buffer")
        statuses = len(proxy.seen)
        proxy.script.append((400, {}, 0.0))
        wait_until(lambda: len(proxy.seen) > statuses + 1, "the 400 and a request after it")
        rejected = backend.target_counters()["rejected_samples"]
        assert rejected > 0 and 400 in proxy.statuses()[statuses:]

        # Down for 12 flushes: every sample waits in the buffer, then arrives.
        server.stop()
        flushes = backend.flushes
        sent += sum(r["sent_events"] for r in publish(broker.frontend, hits))
        wait_until(lambda: backend.flushes > flushes + 12, "12 flushes while it is down")
        proxy.upstream = server.start().url
        server.wait_query("faults_hits_total", {labels(): sent})
        server.wait_query(
            'zibrato_backend_rejected_samples_total{backend="remote-write"}',
            {labels(backend="remote-write"): rejected},
        )
        backend.stop()
        assert backend.buffered == 0 and backend.last_error is not None
        # One sample of its events counter per flush, all stored but the 400's.
        server.wait_query(
            f"count_over_time({EVENTS}[10m])",
            {labels(backend="remote-write"): backend.flushes - 1},
        )
        assert backend.target_counters()["dropped_samples"] == 0
        assert backend.target_counters()["rejected_samples"] == rejected
    finally:
        proxy.close()
        server.stop()
