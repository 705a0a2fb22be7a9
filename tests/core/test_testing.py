"""zibrato.testing: assert on recorded metrics with no broker, by fixture or context manager."""

from __future__ import annotations

import math

import zibrato.testing
from zibrato.testing import CapturedMetrics, capture


def test_fixture_is_registered_by_the_pytest_plugin(request):
    # Reached through the pytest11 entry point: the test modules never import it.
    assert request.config.pluginmanager.get_plugin("zibrato") is zibrato.testing
    assert isinstance(request.getfixturevalue("zibrato_metrics"), CapturedMetrics)


def test_fixture_captures_every_kind_without_a_broker(zibrato_metrics, new_client, dead_address):
    z = new_client(publish=dead_address, source="web-1", tags={"app": "shop"})
    z.incr("orders.placed")
    z.incr("orders.placed", 2, tags={"shop": "eu"})
    z.incr("orders.placed", 0)
    with z.timer("orders.load", level="debug"):
        pass
    z.timing("orders.load", 0.5, level="debug")
    z.gauge("queue.depth", 10)
    z.gauge("queue.depth", 5, delta=True)
    z.gauge("queue.depth", -3, delta=True)
    z.gauge("only.deltas", 2, delta=True)
    z.gauge("only.deltas", 3, delta=True)
    z.observe("orders.items", 7)
    z.observe("orders.items", 0)

    metrics = zibrato_metrics
    assert metrics.total("orders.placed") == 3
    assert metrics.total("orders.placed", tags={"shop": "eu"}) == 2
    assert metrics.total("orders.placed", tags={"app": "shop"}) == 3  # client tags merged
    durations = metrics.values("orders.load")
    assert len(durations) == 2
    assert 0 <= durations[0] < 5
    assert durations[1] == 0.5
    assert metrics.gauge("queue.depth") == 12
    assert metrics.gauge("only.deltas") == 5
    assert metrics.gauge("queue.depth", tags={"no": "such tag"}) is None
    assert metrics.values("orders.items") == [7, 0]

    (eu,) = metrics.filter("orders.placed", tags={"shop": "eu"})
    assert (eu.type, eu.level, eu.source, eu.value) == ("counter", "info", "web-1", 2)
    assert eu.tags == {"app": "shop", "shop": "eu"}
    timers = metrics.filter("orders.load", type="timer", tags={"app": "shop"})
    assert [timer.level for timer in timers] == ["debug", "debug"]
    assert metrics.dropped == {}
    assert z.stats()["sent_events"] == 0  # nothing went to the network


def test_fixture_reports_dropped_events(zibrato_metrics, new_client, dead_address):
    z = new_client(publish=dead_address)
    z.incr("bad name")
    z.incr("")
    z.gauge("g.nan", math.nan)
    z.incr("x", level="loud")
    z.incr("fine")
    assert zibrato_metrics.dropped == {"invalid_name": 2, "invalid_value": 1, "invalid_level": 1}
    assert zibrato_metrics.total("fine") == 1
    assert not zibrato_metrics.filter("bad name")


def test_capture_context_manager(new_client, dead_address):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        z.incr("inside", 4)

        @z.count_me(name="decorated", value=2)
        def work():
            return "done"

        assert work() == "done"
        assert metrics.total("inside") == 4
        metrics.clear()
        assert metrics.events == []
        assert work() == "done"
    z.incr("after.capture")
    assert metrics.total("decorated") == 2
    assert metrics.filter("after.capture") == []
    assert [event.name for event in metrics.events] == ["decorated"]


def test_events_recorded_before_capture_are_not_captured(new_client, dead_address):
    """A capture holds what is recorded inside its block only.

    An event recorded just before ``capture()``, still held by the client because no broker
    has answered yet, must not be delivered into the capture once it starts.
    """
    z = new_client(publish=dead_address)
    z.incr("app.started")
    with capture() as metrics:
        z.incr("inside")
    assert metrics.total("inside") == 1
    assert "app.started" not in metrics
