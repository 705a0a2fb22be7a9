"""The otlp backend against a real OTLP receiver (rotel, from PyPI), read back from what
it logs: exact values, attributes and resources from three processes, then the faults of
issue 20 with a proxy in front.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_proxy import FaultProxy
from otlp_receiver import Received, Rotel
from server_process import wait_received, wait_until

from zibrato.backends.otlp import OtlpBackend

pytestmark = pytest.mark.realserver

Publish = Callable[..., list[dict[str, Any]]]
TIMER_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


@pytest.fixture
def rotel(tmp_path: Path) -> Iterator[Rotel]:
    server = Rotel(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


def latest(points: list[Received], name: str) -> Received | None:
    """The last point rotel received for ``name`` (a cumulative series' current value)."""
    found = [point for point in points if point.name == name]
    return found[-1] if found else None


def total(points: list[Received], name: str) -> float:
    """The sum of every delta point of ``name``."""
    return sum(point.value or 0 for point in points if point.name == name)


def test_exact_values_attributes_and_resources_from_three_processes(
    broker: Any, rotel: Rotel, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(
        OtlpBackend(
            connect=broker.backend,
            endpoint=rotel.endpoint,
            resource_tags="host.name",
            headers="api-key=not-a-real-key",
            flush_interval=0.5,
            environ={"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"},
        ),
        broker.frontend,
    )
    workload = {
        "source": "web-1",
        "calls": [
            ["incr", ["shop.orders", 1], {"tags": {"shop": "eu", "host.name": "h1"}}, 1000],
            ["timing", ["shop.load", 0.007], {}, 100],
            ["timing", ["shop.load", 0.3], {}, 10],
            ["observe", ["shop.items", 7], {}, 1],
            ["gauge", ["shop.depth", -42], {}, 1],
        ],
    }
    reports = publish(broker.frontend, workload, workload, workload)
    wait_received(backend, sum(report["sent_events"] for report in reports))

    def arrived(points: list[Received]) -> bool:
        orders, load = latest(points, "shop.orders"), latest(points, "shop.load")
        return bool(orders and orders.value == 3000 and load and load.count == 330)

    points = rotel.wait_for(arrived, "3000 orders and 330 timings")
    orders = latest(points, "shop.orders")
    assert orders is not None
    assert (orders.type, orders.temporality, orders.attributes) == (
        "Sum",
        "CUMULATIVE",
        {"shop": "eu"},
    )
    assert orders.resource["service.name"] == "web-1" and orders.resource["host.name"] == "h1"
    assert orders.resource["deployment.environment"] == "test"
    assert orders.start < orders.time  # the run's start, kept from its first point
    assert {p.start for p in points if p.name == "shop.orders"} == {orders.start}
    load = latest(points, "shop.load")
    assert load is not None and (load.type, load.unit, load.bounds) == (
        "Histogram",
        "s",
        TIMER_BOUNDS,
    )
    assert load.buckets == [0, 300, 0, 0, 0, 0, 30, 0, 0, 0, 0, 0]
    assert (load.min, load.max) == (0.007, 0.3)
    assert load.sum == pytest.approx(300 * 0.007 + 30 * 0.3, rel=1e-12)
    items = latest(points, "shop.items")
    assert items is not None and items.count == 3 and items.unit == ""
    assert items.buckets == [0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
    depth = latest(points, "shop.depth")
    assert depth is not None and (depth.type, depth.value) == ("Gauge", -42)
    # One backend process, one service.instance.id, on every resource it sends.
    instances = {point.resource["service.instance.id"] for point in points}
    assert len(instances) == 1
    health = latest(points, "zibrato.backend.events")
    assert health is not None and health.resource["service.name"] == "unknown_service:zibrato"
    assert backend.target_counters()["rejected_points"] == 0 and backend.target_errors == 0


def test_faults_lose_nothing_beyond_the_buffer_and_count_every_loss(
    broker: Any, tmp_path: Path, started: Callable[..., Any], publish: Publish
) -> None:
    """Delta points over OTLP/JSON, so that every interval counts: down at start, 429 with
    Retry-After, 502/503/504 retried, a hanging and a slow receiver, an outage of 12
    flushes (a minute at a 5 s flush, scaled down), and a 500, which OTLP never retries:
    the counter arrives exact, and the points the 500 cost are counted at the receiver."""
    rotel = Rotel(tmp_path)
    rotel.port = 1  # nothing there yet: down at start
    proxy = FaultProxy(rotel.endpoint.removesuffix("/v1/metrics"))
    hits = {"calls": [["incr", ["faults.hits", 1], {}, 100]]}
    sent = 0
    try:
        backend = started(
            OtlpBackend(
                connect=broker.backend,
                endpoint=proxy.url + "/v1/metrics",
                protocol="http/json",
                temporality="delta",
                flush_interval=0.25,
                timeout=0.5,
                backoff_base=0.05,
                backoff_cap=0.1,
            ),
            broker.frontend,
        )
        sent += sum(r["sent_events"] for r in publish(broker.frontend, hits))
        wait_until(lambda: backend.buffered > 0 and backend.flushes > 2, "flushes to wait")
        rotel.start()
        proxy.upstream = rotel.endpoint.removesuffix("/v1/metrics")

        def deliver(*script: tuple[int, dict[str, str], float]) -> None:
            nonlocal sent
            proxy.script.extend(script)
            sent += sum(r["sent_events"] for r in publish(broker.frontend, hits))
            rotel.wait_for(lambda got: total(got, "faults.hits") == sent, f"{sent} hits")
            assert not proxy.script

        deliver()
        deliver((429, {"Retry-After": "1"}, 0.0))
        retried = next(s for s in proxy.seen if s.status == 429)
        assert min(s.at for s in proxy.seen if s.at > retried.at) - retried.at >= 1.0
        deliver((502, {}, 0.0), (503, {}, 0.0), (504, {}, 0.0))
        deliver((503, {}, 1.0))  # hangs past the 0.5 s timeout, then fails
        proxy.delay = 0.1  # slow, within the time one flush may take
        deliver()
        proxy.delay = 0.0

        rotel.stop()  # down for 12 flushes: every point waits in the buffer
        flushes = backend.flushes
        sent += sum(r["sent_events"] for r in publish(broker.frontend, hits))
        wait_until(lambda: backend.flushes > flushes + 12, "12 flushes while it is down")
        rotel.start(same_port=True)
        rotel.wait_for(lambda got: total(got, "faults.hits") == sent, f"{sent} hits")

        # A 500 is final in OTLP: that request's points are dropped, and counted.
        wait_until(lambda: backend.buffered == 0, "an empty buffer")
        proxy.script.append((500, {}, 0.0))
        wait_until(lambda: backend.target_counters()["rejected_points"] > 0, "the 500")
        rejected = backend.target_counters()["rejected_points"]
        rotel.wait_for(
            lambda got: total(got, "zibrato.backend.rejected_points") == rejected,
            f"the count of {rejected} rejected points",
        )
        assert total(rotel.received(), "faults.hits") == sent
        assert backend.target_counters()["dropped_points"] == 0
    finally:
        proxy.close()
        rotel.stop()
