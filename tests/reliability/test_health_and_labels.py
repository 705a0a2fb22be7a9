"""Item 7 and item 1 in the small: kinds, labels that clash, health past the series cap,
statistics past the float range, and a backend whose thread dies anyway."""

from __future__ import annotations

import math
import threading
import time

import pytest

from zibrato.aggregation import (
    HEALTH_SERIES_RESERVE,
    Aggregator,
    Rollup,
    Series,
    SeriesType,
    distribution_stats,
)
from zibrato.backends.base import Backend
from zibrato.backends.prometheus import PrometheusBackend, series_labels


@pytest.mark.parametrize("kind", [0.0, 1.0, 3.0, True, False])
def test_kinds_that_only_compare_equal_to_a_kind_are_rejected(kind):
    aggregator = Aggregator()
    aggregator.add_events([(kind, "k", 1, None, None)])
    assert aggregator.rollup(now=1.0, interval=1.0).series == ()
    assert aggregator.rejected == {"invalid_kind": 1}


def test_unhashable_names_and_tag_values_cost_one_event_each():
    aggregator = Aggregator()
    aggregator.add_events(
        [
            (0, {"a": 1}, 1, None, None),
            (0, ["a"], 1, None, None),
            (0, "ok", 1, None, {"a": {"b": 1}}),
            (0, "ok", 1, None, {"a": ["b"]}),
            (0, "ok", 1, None, None),
        ]
    )
    assert aggregator.rejected == {"invalid_name": 2, "invalid_tags": 2}
    (series,) = aggregator.rollup(now=1.0, interval=1.0).series
    assert series.stats["sum"] == 1


def test_two_timers_of_1e308_still_make_a_rollup():
    """The sum is beyond the float range: inf; every other statistic stays exact."""
    aggregator = Aggregator()
    aggregator.add_events([(3, "huge", 1e308, None, None)] * 2 + [(3, "wide", -1e308, None, None)])
    aggregator.add_events([(3, "wide", 1e308, None, None)])
    series = {s.name: s.stats for s in aggregator.rollup(now=1.0, interval=1.0).series}
    huge, wide = series["huge"], series["wide"]
    assert huge["sum"] == math.inf and huge["sum_squares"] == math.inf
    assert huge["mean"] == huge["median"] == huge["p99"] == 1e308 and huge["stddev"] == 0
    assert wide["sum"] == 0 and wide["mean"] == 0 and wide["stddev"] == 1e308
    assert wide["p90"] == pytest.approx(0.8e308)


def test_statistics_past_the_float_range_with_sampling():
    ordered = sorted([1e308] * 10)
    stats = distribution_stats(ordered, (50,))
    assert stats["mean"] == 1e308 and math.isinf(stats["sum"])


def test_health_series_get_through_a_full_series_table():
    """Item 7: zibrato.publisher.dropped was dropped by the very cap it reports on."""
    aggregator = Aggregator(max_series=100)
    aggregator.add_events([(0, f"user.{i}", 1, None, None) for i in range(500)])
    reports = [
        (0, "zibrato.publisher.dropped", 7, f"web-{i}", {"reason": "buffer_full"}) for i in range(3)
    ]
    aggregator.add_events(reports)
    rollup = aggregator.rollup(now=1.0, interval=1.0)
    names = [s.name for s in rollup.series]
    assert names.count("zibrato.publisher.dropped") == 3
    assert len(names) == 103 and aggregator.dropped_series == 400
    # ...and the reserve is bounded too.
    aggregator.add_events(
        [(0, "zibrato.x", 1, f"s{i}", None) for i in range(HEALTH_SERIES_RESERVE + 50)]
    )
    assert aggregator.series_count == HEALTH_SERIES_RESERVE
    assert aggregator.dropped_series == 450


def _series(name: str, tags: dict[str, str], source: str | None = None, value: float = 1) -> Series:
    return Series(name, SeriesType.COUNTER, source, tags, {"sum": value, "rate": value})


def test_tags_that_map_to_one_label_keep_both_values():
    """Item 7: tags a.b and a_b became one Prometheus label and one value was lost."""
    labels = series_labels(
        _series("x", {"a.b": "dot", "a_b": "underscore", "source": "tag"}, "src")
    )
    assert dict(labels) == {"a_b": "dot", "a_b_2": "underscore", "source": "src", "source_2": "tag"}
    odd = series_labels(_series("x", {".": "1", "-": "2", "é": "3"}))
    assert dict(odd) == {"_": "2", "_2": "1", "_3": "3"}  # sorted by key; never "__2"


def test_health_series_are_never_evicted_for_ordinary_ones():
    backend = PrometheusBackend(listen="127.0.0.1:0", max_series=50)
    health = _series("zibrato.backend.events", {"backend": "prometheus"})
    backend.emit(Rollup(1.0, 1.0, (health,)))
    for start in range(0, 500, 50):
        backend.emit(
            Rollup(1.0, 1.0, tuple(_series(f"u.{i}", {}) for i in range(start, start + 50)))
        )
    text = backend.exposition().decode()
    assert 'zibrato_backend_events_total{backend="prometheus"} 1' in text
    assert backend.evicted_series == 450


class _Broken(Backend):
    kind = "broken"

    def emit(self, rollup: Rollup) -> None:
        pass


def test_a_backend_whose_thread_died_says_so():
    """Should a thread end anyway, failure and healthy() say so (the serve loop exits 1)."""
    backend = _Broken(connect="tcp://127.0.0.1:1", flush_interval=0.05)

    def die() -> None:
        raise SystemExit("simulated")

    backend._flush_loop = die  # type: ignore[method-assign]
    backend.start()
    try:
        deadline = time.monotonic() + 5
        while backend.healthy() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not backend.healthy()
        assert backend.failure is not None and "flush" in backend.failure
    finally:
        backend.stop()


def test_an_exception_in_a_flush_costs_that_interval_only():
    flushes = []

    class Flaky(Backend):
        kind = "flaky"

        def emit(self, rollup: Rollup) -> None:
            flushes.append(rollup)

    backend = Flaky(connect="tcp://127.0.0.1:1", flush_interval=0.05)
    calls = [0]
    original = backend.flush

    def flush() -> Rollup:
        calls[0] += 1
        if calls[0] == 2:
            raise ArithmeticError("simulated")
        return original()

    backend.flush = flush  # type: ignore[method-assign]
    backend.start()
    try:
        deadline = time.monotonic() + 5
        while len(flushes) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        backend.stop()
    assert (len(flushes) >= 3 and backend.healthy() is False) or backend.failure is None
    assert backend.internal_errors == {"flush_failed": 1}
    health = [s for r in flushes for s in r.series if s.name == "zibrato.backend.internal_errors"]
    assert [s.tags["reason"] for s in health] == ["flush_failed"]
    assert threading.active_count() >= 1
