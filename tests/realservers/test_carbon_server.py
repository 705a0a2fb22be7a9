"""The graphite backend against carbon-cache (Debian's graphite-carbon), read back from the
whisper files it writes: exact totals, a restart, a long outage, and stops at bad moments.

carbon keeps one point per second here (``1s:1h``) and whisper keeps the last value written
for a timestamp, so a point overwritten by a later write shows up as a short total.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from real_servers import CarbonCache
from server_process import wait_received, wait_until

from zibrato import Zibrato
from zibrato.backends.graphite import GraphiteBackend

pytestmark = pytest.mark.realserver

Publish = Callable[..., list[dict[str, Any]]]
EVENTS = "zibrato.backend.events.backend.graphite.count"
DROPPED = "zibrato.backend.dropped_lines.backend.graphite.count"


def graphite(broker: Any, carbon: CarbonCache, **options: Any) -> GraphiteBackend:
    return GraphiteBackend(connect=broker.backend, address=carbon.address, **options)


def test_exact_totals_from_three_processes(
    broker: Any, carbon: CarbonCache, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(graphite(broker, carbon, flush_interval=1.0), broker.frontend)
    workload = {
        "calls": [
            ["incr", ["shop.orders", 1], {"tags": {"shop": "eu"}}, 1000],
            ["timing", ["shop.load", 0.007], {}, 100],
            ["observe", ["shop.items", 7], {}, 1],
            ["gauge", ["shop.depth", -42], {}, 1],
            ["incr", ["odd|name:x#y@z", 1], {"tags": {"k": "v|#@:,\nx y"}}, 10],
        ]
    }
    reports = publish(broker.frontend, workload, workload, workload)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    received = backend.received_events
    backend.stop()
    carbon.wait_total("shop.orders.shop.eu.count", 3000)
    carbon.wait_total("shop.load.count", 300)
    carbon.wait_total("shop.items.count", 3)
    carbon.wait_total("odd_name_x_y_z.k.v______x_y.count", 30)  # no line-protocol injection
    assert set(carbon.points("shop.load.max").values()) == {0.007}  # seconds
    assert list(carbon.points("shop.depth").values())[-1] == -42
    carbon.wait_total(EVENTS, received)  # its own health, complete too
    assert backend.target_errors == 0 and backend.dropped_lines == 0


def test_the_stops_flush_never_overwrites_a_point(
    broker: Any, carbon: CarbonCache, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(graphite(broker, carbon, flush_interval=1.0), broker.frontend)
    ticks = {"calls": [["incr", ["ticks", 1], {}, 1], ["sleep", [0.005], {}, 1]], "repeat": 200}
    reports = publish(broker.frontend, ticks, ticks, ticks)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    # Right after a periodic flush, a few more ticks, then stop: the stop's partial
    # interval falls in the second of that flush's point, which it must not replace.
    flushes = backend.flushes
    wait_until(lambda: backend.flushes > flushes, "a periodic flush", 10)
    late = Zibrato(broker.frontend)
    try:
        received = backend.received_events  # before the two: they may arrive within flush()
        late.incr("ticks", 1)
        late.incr("ticks", 1)
        late.flush(timeout=5)
        wait_received(backend, received + 2)
    finally:
        late.close()
    backend.stop()
    carbon.wait_total("ticks.count", 602)


def test_carbon_restarted_mid_run_loses_nothing(
    broker: Any, carbon: CarbonCache, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(graphite(broker, carbon, flush_interval=0.5), broker.frontend)
    hits = {"calls": [["incr", ["restart.hits", 1], {}, 100]]}
    reports = publish(broker.frontend, hits, hits, hits)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    carbon.wait_total("restart.hits.count", 300)

    carbon.stop()
    errors = backend.target_errors
    received = backend.received_events
    reports = publish(broker.frontend, hits, hits, hits)
    wait_received(backend, received + sum(report["sent_events"] for report in reports))
    wait_until(lambda: backend.target_errors > errors, "a flush to find carbon down", 10)
    wait_until(lambda: backend.pending_lines > 0, "the new lines to wait for carbon", 10)

    carbon.start(same_port=True)
    carbon.wait_total("restart.hits.count", 600)
    assert backend.dropped_lines == 0


def test_a_long_outage_reports_its_drops_to_carbon(
    broker: Any, carbon: CarbonCache, started: Callable[..., Any], publish: Publish
) -> None:
    backend = started(
        graphite(broker, carbon, flush_interval=0.5, buffer_lines=10), broker.frontend
    )
    carbon.stop()
    series = {"calls": [["incr", [f"outage.s{i:02d}", 1], {}, 1] for i in range(20)]}
    reports = publish(broker.frontend, series, series, series)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    wait_until(lambda: backend.dropped_lines >= 30, "the buffer to overflow", 10)
    flushes = backend.flushes
    wait_until(lambda: backend.flushes > flushes + 1, "two flushes while carbon is down", 10)

    carbon.start(same_port=True)
    # Every drop was counted, and the count reached carbon ahead of the data.
    wait_until(
        lambda: carbon.total(DROPPED) == backend.dropped_lines,
        f"carbon to hold every drop ({backend.dropped_lines})",
    )
    assert backend.dropped_lines >= 30
    # The newest lines were kept for carbon (it writes them in its own time), the rest counted.
    kept = wait_until(
        lambda: sum(carbon.total(f"outage.s{i:02d}.count") for i in range(20)),
        "the lines kept for carbon",
    )
    assert 0 < kept < 60


def test_a_stop_inside_the_backoff_delivers_the_buffer(
    broker: Any, carbon: CarbonCache, started: Callable[..., Any], publish: Publish
) -> None:
    # A clock that never moves: every retry is inside the backoff window, until the stop.
    backend = started(
        graphite(broker, carbon, flush_interval=60.0, clock=lambda: 0.0), broker.frontend
    )
    carbon.stop()
    hits = {"calls": [["incr", ["backoff.hits", 1], {}, 100]]}
    reports = publish(broker.frontend, hits, hits, hits)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    backend.flush()
    assert backend.target_errors == 1 and backend.pending_lines > 0

    carbon.start(same_port=True)
    backend.flush()  # inside the backoff: no attempt yet
    assert backend.target_errors == 1 and backend.pending_lines > 0
    backend.stop()
    carbon.wait_total("backoff.hits.count", 300)
    assert backend.dropped_lines == 0


def test_carbon_stopped_right_after_a_flush_gets_that_flush_again(
    broker: Any, carbon: CarbonCache, started: Callable[..., Any], publish: Publish
) -> None:
    """carbon-cache writes once a second and loses what it holds when stopped: the flush
    it took just before is sent again once it is back (issue 20: 380 of 400 ticks)."""
    backend = started(graphite(broker, carbon, flush_interval=1.0), broker.frontend)
    ticks = {"calls": [["incr", ["stopped.ticks", 1], {}, 200]]}
    reports = publish(broker.frontend, ticks, ticks)
    wait_received(backend, sum(report["sent_events"] for report in reports))
    flushes = backend.flushes
    wait_until(lambda: backend.flushes > flushes, "the flush that carries the ticks", 10)
    carbon.stop()  # within 0.2 s of that flush (the wait polls every 0.05 s)
    carbon.start(same_port=True)
    # The next flush finds the connection closed and sends that flush again on the new
    # one (carbon may have written it before it stopped, under load: then the total is
    # there before the resend, which must happen all the same).
    wait_until(lambda: backend.resent_lines > 0, "the flush sent again", 10)
    carbon.wait_total("stopped.ticks.count", 400)
    assert backend.dropped_lines == 0
