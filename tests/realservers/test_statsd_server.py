"""The statsd backend against Etsy statsd (node, from the npm registry), asked what it holds.

Three publishing processes, a ``zibrato broker`` process, our backend, and statsd: every
total must come back exact, and nothing may be lost silently under volume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from real_servers import EtsyStatsd, StatsdHolds
from server_process import wait_received

from zibrato.backends.statsd import DEFAULT_MAX_SENT_VALUES, StatsdBackend

pytestmark = pytest.mark.realserver

BAD_LINES = "statsd.bad_lines_seen"
Publish = Callable[..., list[dict[str, Any]]]


def shop_workload() -> dict[str, Any]:
    return {
        "calls": [
            ["incr", ["shop.orders", 1], {"tags": {"shop": "eu"}}, 1000],
            ["incr", ["shop.refunds", 2.5], {}, 4],
            ["timing", ["shop.load", 0.007], {}, 100],
            ["observe", ["shop.items", 7], {}, 1],
            # The client refuses a negative timing (negative_duration); a negative
            # distribution value also goes out as |ms, where Etsy statsd refuses it.
            ["observe", ["shop.skew", -5], {}, 1],
            ["gauge", ["shop.depth", -42], {}, 1],
            ["incr", ["odd|name:x#y@z", 1], {"tags": {"k": "v|#@:,\nx y"}}, 10],
        ]
    }


def test_exact_totals_from_three_processes(
    broker: Any, statsd_server: EtsyStatsd, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(
        StatsdBackend(connect=broker.backend, address=statsd_server.address, flush_interval=0.5),
        broker.frontend,
    )
    reports = publish(broker.frontend, shop_workload(), shop_workload(), shop_workload())
    wait_received(backend, sum(report["sent_events"] for report in reports))

    def complete(held: StatsdHolds) -> bool:
        return len(held.timers.get("shop.load", [])) == 300 and "shop.skew" in held.timers

    held = statsd_server.wait_for(complete, "every timer value")
    assert held.counter("shop.orders.shop.eu") == 3000
    assert held.counter("shop.refunds") == 30
    assert held.timers["shop.load"] == [7] * 300
    assert held.timer_counts["shop.load"] == 300
    # A distribution is held as values, not counted as a counter (|h would be: 21).
    assert held.timers["shop.items"] == [7, 7, 7]
    assert "shop.items" not in held.counters
    # A negative |ms value reaches statsd as 0, counted, and is not a bad line.
    assert held.timers["shop.skew"] == [0, 0, 0]
    assert held.gauges["shop.depth"] == -42
    assert held.counter("odd_name_x_y_z.k.v______x_y") == 30  # no line-protocol injection
    statsd_server.wait_for(
        lambda h: h.counter("zibrato.backend.clamped_values.backend.statsd") == 3,
        "the clamped values counted",
    )
    assert statsd_server.holds().counter(BAD_LINES) == 0
    assert backend.target_errors == 0


@pytest.mark.parametrize("per_process", [5_000, 20_000])
def test_a_large_flush_is_sampled_and_counted_not_lost(
    broker: Any,
    statsd_server: EtsyStatsd,
    started: Callable[..., Any],
    publish: Publish,
    per_process: int,
) -> None:
    backend = started(
        StatsdBackend(connect=broker.backend, address=statsd_server.address, flush_interval=2.0),
        broker.frontend,
    )
    timings = {"calls": [["timing", ["bulk.load", 0.012], {}, per_process]]}
    reports = publish(broker.frontend, timings, timings, timings)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    total = 3 * per_process
    held = statsd_server.wait_for(
        lambda h: h.timer_counts.get("bulk.load", 0) >= total - 1e-6, f"{total} timings"
    )
    # statsd's count (1/rate per value) is exact up to float rounding; its values a sample.
    assert held.timer_counts["bulk.load"] == pytest.approx(total, rel=1e-9)
    flushes_seen = len(held.timers["bulk.load"]) / DEFAULT_MAX_SENT_VALUES
    assert 1 <= flushes_seen <= 3  # at most max_sent_values per backend flush
    assert set(held.timers["bulk.load"]) == {12}
    # The backend's own health got there too, and says all events arrived.
    events = statsd_server.wait_for(
        lambda h: h.counter("zibrato.backend.events.backend.statsd") >= total,
        "the backend's health",
    )
    assert events.counter("zibrato.backend.lost_events.backend.statsd") == 0
    assert events.counter(BAD_LINES) == 0
    assert backend.target_errors == 0


def test_dogstatsd_tags_reach_etsy_statsd_as_graphite_tags(
    broker: Any, statsd_server: EtsyStatsd, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(
        StatsdBackend(
            connect=broker.backend,
            address=statsd_server.address,
            flush_interval=0.5,
            tag_style="dogstatsd",
        ),
        broker.frontend,
    )
    workload = {
        "calls": [
            ["incr", ["api.hits", 1], {"tags": {"method": "GET"}}, 50],
            ["timing", ["api.load", 0.25], {"tags": {"method": "GET"}}, 2],
        ]
    }
    reports = publish(broker.frontend, workload, workload)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    held = statsd_server.wait_for(
        lambda h: len(h.timers.get("api.load;method=GET", [])) == 4, "the tagged timer"
    )
    assert held.counter("api.hits;method=GET") == 100
    assert held.timers["api.load;method=GET"] == [250] * 4
    assert held.counter(BAD_LINES) == 0
