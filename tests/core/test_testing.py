"""zibrato.testing: assert on recorded metrics with no broker, by fixture or context manager."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

import zibrato.testing
from zibrato.testing import CapturedMetrics, MetricNotRecorded, WrongMetricType, capture


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


def test_reading_a_name_never_recorded_says_which_were(new_client, dead_address):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        z.incr("orders.placed")
        z.gauge("queue.depth", 3)
    for read in (metrics.total, metrics.values, metrics.gauge, metrics.unique):
        with pytest.raises(MetricNotRecorded) as caught:
            read("orders.placd")
        assert str(caught.value) == (
            "no metric 'orders.placd' was recorded; recorded: orders.placed, queue.depth"
        )
    assert metrics.filter("orders.placd") == []  # filter() is the query that may be empty
    assert "orders.placed" in metrics and "orders.placd" not in metrics
    assert metrics.names() == {"orders.placed": ["counter"], "queue.depth": ["gauge"]}
    with capture() as empty, pytest.raises(MetricNotRecorded, match="recorded: nothing"):
        empty.total("anything")


def test_reading_a_metric_as_the_wrong_type_says_how_to_read_it(new_client, dead_address):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        z.gauge("queue.depth", 3)
        z.incr("orders.placed")
        z.timing("orders.load", 0.1)
        z.set("users", "ann")
    cases = [
        (
            metrics.total,
            "queue.depth",
            "'queue.depth' was recorded as gauge, not counter; read it with gauge()",
        ),
        (
            metrics.gauge,
            "orders.placed",
            "'orders.placed' was recorded as counter, not gauge; read it with total()",
        ),
        (
            metrics.total,
            "orders.load",
            "'orders.load' was recorded as timer, not counter; read it with values()",
        ),
        (
            metrics.unique,
            "orders.load",
            "'orders.load' was recorded as timer, not set; read it with values()",
        ),
        (metrics.total, "users", "'users' was recorded as set, not counter; read it with unique()"),
    ]
    for read, name, message in cases:
        with pytest.raises(WrongMetricType) as caught:
            read(name)
        assert str(caught.value) == message
    assert metrics.values("queue.depth") == [3]  # values() reads every type


def test_captured_metrics_repr_lists_names_types_and_drops(new_client, dead_address):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        assert repr(metrics) == "<CapturedMetrics 0 event(s): none>"
        z.incr("orders.placed", 2)
        z.incr("orders.placed")
        z.gauge("orders.placed", 1)
        z.timing("orders.load", 0.1)
        z.incr("bad name")
        metrics.events  # noqa: B018 - flushes, so the repr below has everything
        assert repr(metrics) == (
            "<CapturedMetrics 4 event(s): orders.load (timer), orders.placed (counter/gauge), "
            "dropped {'invalid_name': 1}>"
        )
        for index in range(12):
            z.incr(f"n{index:02}")
        metrics.clear()
        for index in range(12):
            z.incr(f"n{index:02}")
        metrics.events  # noqa: B018
    text = repr(metrics)
    assert text.startswith("<CapturedMetrics 12 event(s): n00 (counter), n01 (counter)")
    assert text.endswith("n07 (counter), ... and 4 more, dropped {'invalid_name': 1}>")


def test_a_failed_assertion_shows_what_was_captured(tmp_path):
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            from zibrato import Zibrato

            def test_counts(zibrato_metrics):
                z = Zibrato("tcp://127.0.0.1:1")
                z.incr("orders.placed")
                assert zibrato_metrics.total("orders.placed") == 2
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert "<CapturedMetrics 1 event(s): orders.placed (counter)>" in result.stdout
