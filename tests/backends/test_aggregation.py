"""Aggregation, checked against references computed with the ``statistics`` module.

Pure computation: no sockets. Every test feeds events into an :class:`Aggregator`
(directly, or as a decoded :class:`Batch`) and reads the rollup a backend would emit.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import pytest

from zibrato.aggregation import (
    Aggregator,
    Rollup,
    Series,
    SeriesType,
    distribution_stats,
    percentile_key,
    quantile,
)
from zibrato.protocol import Batch, Kind

C, G, GD, T, D = (int(k) for k in list(Kind)[:5])  # counter, gauge, delta, timer, distribution


def ev(kind: int, name: str, value: Any, source: Any = None, tags: Any = None) -> tuple:
    return (kind, name, value, source, tags)


def batch(
    events: Sequence[Sequence[Any]],
    *,
    source: str | None = None,
    tags: dict[str, str] | None = None,
    publisher: str = "pub-1",
) -> Batch:
    return Batch("info", publisher, 0, 0, 1_700_000_000.0, source, tags, tuple(events))


def only(rollup: Rollup, name: str, type_: str | None = None) -> Series:
    found = [s for s in rollup.series if s.name == name and (type_ is None or s.type == type_)]
    assert len(found) == 1, f"expected one {type_ or ''} series {name!r}, got {found}"
    return found[0]


def reference(values: Sequence[float], percentiles: Sequence[float]) -> dict[str, float]:
    """What the design promises, computed independently with the statistics module."""
    ref = {
        "count": len(values),
        "sum": math.fsum(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "stddev": statistics.pstdev(values),
    }
    for pct in percentiles:
        steps = 100
        while not float(pct * steps / 100).is_integer():
            steps *= 10
        cuts = statistics.quantiles(values, n=steps, method="inclusive")
        ref[percentile_key(pct)] = cuts[int(pct * steps / 100) - 1] if pct < 100 else max(values)
    return ref


def assert_matches(stats: dict[str, float] | Any, ref: dict[str, float]) -> None:
    for key, expected in ref.items():
        assert key in stats, f"missing {key} in {dict(stats)}"
        assert stats[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), key


# -- timers and distributions against the statistics module ---------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("size", [2, 3, 10, 101, 1000, 4999])
def test_timer_stats_match_statistics_module(seed: int, size: int) -> None:
    rng = random.Random(seed * 10_000 + size)
    values = [rng.lognormvariate(-3, 1.2) for _ in range(size)]
    agg = Aggregator()
    agg.add_events([ev(T, "db.query", v) for v in values])
    rollup = agg.rollup(now=100.0, interval=10.0)
    series = only(rollup, "db.query", SeriesType.TIMER)
    assert_matches(series.stats, reference(values, (90, 95, 99)))
    assert sorted(series.values) == sorted(values)
    assert rollup.timestamp == 100.0 and rollup.interval == 10.0


def test_distribution_stats_match_and_integers_are_fine() -> None:
    rng = random.Random(7)
    values = [rng.randint(-50, 5000) for _ in range(777)]
    agg = Aggregator()
    agg.add_events([ev(D, "payload.bytes", v) for v in values])
    series = only(agg.rollup(now=1.0, interval=1.0), "payload.bytes", SeriesType.DISTRIBUTION)
    assert_matches(series.stats, reference(values, (90, 95, 99)))


def test_configurable_percentiles_including_fractional_keys() -> None:
    rng = random.Random(11)
    values = [rng.uniform(0, 10) for _ in range(2500)]
    agg = Aggregator(percentiles=(50, 99.9, 75))
    agg.add_events([ev(T, "t", v) for v in values])
    stats = only(agg.rollup(now=1.0, interval=1.0), "t").stats
    assert {"p50", "p75", "p99_9"} <= set(stats)
    assert not {"p90", "p95", "p99"} & set(stats)
    assert stats["p50"] == pytest.approx(statistics.median(values), rel=1e-12)
    assert stats["p75"] == pytest.approx(
        statistics.quantiles(values, n=4, method="inclusive")[2], rel=1e-12
    )
    assert stats["p99_9"] == pytest.approx(
        statistics.quantiles(values, n=1000, method="inclusive")[998], rel=1e-12
    )
    assert percentile_key(99.9) == "p99_9"
    assert percentile_key(90) == "p90"


@pytest.mark.parametrize("bad", [0, -1, 100.5])
def test_percentiles_out_of_range_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        Aggregator(percentiles=(50, bad))


def test_quantile_and_distribution_stats_helpers() -> None:
    values = sorted(random.Random(5).gauss(0, 1) for _ in range(333))
    for pct in (1, 12.5, 50, 90, 99):
        key = percentile_key(pct)
        assert quantile(values, pct) == pytest.approx(reference(values, [pct])[key], rel=1e-12)
    assert quantile(values, 100) == values[-1]
    assert distribution_stats([4.0]) == pytest.approx(
        {
            "count": 1,
            "sum": 4.0,
            "min": 4.0,
            "max": 4.0,
            "mean": 4.0,
            "median": 4.0,
            "stddev": 0.0,
            "sum_squares": 16.0,
            "p90": 4.0,
            "p95": 4.0,
            "p99": 4.0,
        }
    )


def test_a_single_timer_value() -> None:
    agg = Aggregator()
    agg.add_events([ev(T, "one", 0.25)])
    stats = only(agg.rollup(now=1.0, interval=1.0), "one").stats
    assert stats["count"] == 1
    assert stats["stddev"] == 0
    for key in ("sum", "min", "max", "mean", "median", "p90", "p95", "p99"):
        assert stats[key] == 0.25, key


# -- counters and gauges -------------------------------------------------------------------
def test_counters_sum_and_rate_per_second() -> None:
    rng = random.Random(3)
    increments = [rng.randint(1, 9) for _ in range(500)] + [0.5, 2.25]
    agg = Aggregator()
    agg.add_events([ev(C, "hits", v) for v in increments])
    rollup = agg.rollup(now=50.0, interval=4.0)
    stats = only(rollup, "hits", SeriesType.COUNTER).stats
    assert stats["sum"] == pytest.approx(math.fsum(increments))
    assert stats["rate"] == pytest.approx(math.fsum(increments) / 4.0)
    # the next interval starts empty
    assert agg.rollup(now=54.0, interval=4.0).series == ()


def test_counters_with_a_zero_interval_have_a_finite_rate() -> None:
    agg = Aggregator()
    agg.add_events([ev(C, "hits", 3)])
    stats = only(agg.rollup(now=1.0, interval=0.0), "hits").stats
    assert stats["sum"] == 3
    assert math.isfinite(stats["rate"])


def test_gauges_last_value_with_deltas_applied_and_remembered() -> None:
    agg = Aggregator()
    agg.add_events([ev(G, "queue", 5), ev(GD, "queue", 3), ev(GD, "queue", -1)])
    assert only(agg.rollup(now=1.0, interval=1.0), "queue", SeriesType.GAUGE).stats["value"] == 7
    # an interval without events for the gauge does not report it
    assert agg.rollup(now=2.0, interval=1.0).series == ()
    # a delta in a later interval moves the remembered value
    agg.add_events([ev(GD, "queue", -2)])
    assert only(agg.rollup(now=3.0, interval=1.0), "queue").stats["value"] == 5
    agg.add_events([ev(GD, "queue", 10), ev(G, "queue", 1), ev(GD, "queue", 0.5)])
    assert only(agg.rollup(now=4.0, interval=1.0), "queue").stats["value"] == 1.5


def test_a_delta_on_a_never_set_gauge_starts_from_zero() -> None:
    agg = Aggregator()
    agg.add_events([ev(GD, "conns", 4), ev(GD, "conns", -1)])
    assert only(agg.rollup(now=1.0, interval=1.0), "conns").stats["value"] == 3


# -- series identity -----------------------------------------------------------------------
def test_tag_order_does_not_split_counters_or_timers() -> None:
    agg = Aggregator()
    agg.add_events(
        [
            ev(C, "req", 1, None, {"method": "GET", "code": "200"}),
            ev(C, "req", 2, None, {"code": "200", "method": "GET"}),
            ev(T, "lat", 0.1, None, {"method": "GET", "code": "200"}),
            ev(T, "lat", 0.3, None, {"code": "200", "method": "GET"}),
        ]
    )
    rollup = agg.rollup(now=1.0, interval=1.0)
    req = only(rollup, "req")
    assert req.stats["sum"] == 3
    assert dict(req.tags) == {"method": "GET", "code": "200"}
    lat = only(rollup, "lat")
    assert lat.stats["count"] == 2
    assert lat.stats["mean"] == pytest.approx(0.2)


def test_tag_order_does_not_split_gauges() -> None:
    # Same tags, different insertion order: one gauge, whose value is the last one set.
    agg = Aggregator()
    agg.add_events(
        [
            ev(G, "temp", 1, None, {"room": "a", "floor": "2"}),
            ev(G, "temp", 2, None, {"floor": "2", "room": "a"}),
            ev(G, "temp", 3, None, {"room": "a", "floor": "2"}),
        ]
    )
    assert only(agg.rollup(now=1.0, interval=1.0), "temp").stats["value"] == 3


def test_tag_order_does_not_split_gauge_deltas() -> None:
    agg = Aggregator()
    agg.add_events(
        [
            ev(G, "pool", 10, None, {"db": "main", "role": "rw"}),
            ev(GD, "pool", 5, None, {"role": "rw", "db": "main"}),
        ]
    )
    assert only(agg.rollup(now=1.0, interval=1.0), "pool").stats["value"] == 15


def test_batch_tags_are_merged_under_event_tags() -> None:
    agg = Aggregator()
    agg.add(
        batch(
            [
                ev(C, "orders", 1),
                ev(C, "orders", 2, None, {"env": "staging"}),
                ev(C, "orders", 4, None, {"region": "eu"}),
            ],
            tags={"app": "shop", "env": "prod"},
        )
    )
    rollup = agg.rollup(now=1.0, interval=1.0)
    by_tags = {tuple(sorted(s.tags.items())): s.stats["sum"] for s in rollup.series}
    assert by_tags == {
        (("app", "shop"), ("env", "prod")): 1,
        (("app", "shop"), ("env", "staging")): 2,
        (("app", "shop"), ("env", "prod"), ("region", "eu")): 4,
    }


def test_batch_tags_and_the_same_tags_on_events_are_one_series() -> None:
    agg = Aggregator()
    agg.add(batch([ev(C, "jobs", 1)], tags={"app": "a"}, publisher="p1"))
    agg.add(batch([ev(C, "jobs", 2, None, {"app": "a"})], publisher="p2"))
    series = only(agg.rollup(now=1.0, interval=1.0), "jobs")
    assert series.stats["sum"] == 3
    assert dict(series.tags) == {"app": "a"}


def test_event_source_wins_over_batch_source() -> None:
    agg = Aggregator()
    agg.add(batch([ev(C, "hits", 1), ev(C, "hits", 10, "web-2")], source="web-1"))
    agg.add(batch([ev(C, "hits", 100)]))
    rollup = agg.rollup(now=1.0, interval=1.0)
    by_source = {s.source: s.stats["sum"] for s in rollup.series}
    assert by_source == {"web-1": 1, "web-2": 10, None: 100}


def test_same_name_as_counter_and_timer_are_two_series() -> None:
    agg = Aggregator()
    agg.add_events([ev(C, "login", 1), ev(T, "login", 0.5), ev(C, "login", 1), ev(D, "login", 7)])
    rollup = agg.rollup(now=1.0, interval=1.0)
    assert only(rollup, "login", SeriesType.COUNTER).stats["sum"] == 2
    assert only(rollup, "login", SeriesType.TIMER).stats["count"] == 1
    assert only(rollup, "login", SeriesType.DISTRIBUTION).stats["sum"] == 7
    assert len(rollup.series) == 3


def test_series_from_many_publishers_merge() -> None:
    agg = Aggregator()
    for n in range(5):
        agg.add(batch([ev(C, "jobs", n + 1), ev(T, "job.time", n / 10)], publisher=f"p{n}"))
    rollup = agg.rollup(now=1.0, interval=1.0)
    assert only(rollup, "jobs").stats["sum"] == 15
    assert only(rollup, "job.time").stats["count"] == 5


# -- invalid events ------------------------------------------------------------------------
def test_invalid_events_are_counted_by_reason_and_valid_ones_kept() -> None:
    agg = Aggregator()
    agg.add(
        batch(
            [
                ev(C, "ok", 1),
                ev(C, "nan", math.nan),
                ev(T, "inf", math.inf),
                ev(G, "neg.inf", -math.inf),
                ev(C, "bool", True),
                ev(C, "text", "3"),
                ev(C, 123, 1),
                ev(C, "has space", 1),
                ev(C, "", 1),
                ev(9, "kind", 1),
                ev("0", "kind", 1),
                ev(C, "tags", 1, None, {"k": 1}),
                ev(C, "tags", 1, None, ["k", "v"]),
                ev(C, "tags", 1, None, {"": "v"}),
                ev(C, "source", 1, 42),
                (C, "short"),
                "not an event",
                ev(T, "ok.timer", 0.5),
                ev(C, "ok", 2),
            ]
        )
    )
    assert agg.rejected == {
        "invalid_value": 5,
        "invalid_name": 3,
        "invalid_kind": 2,
        "invalid_tags": 3,
        "invalid_source": 1,
        "invalid_event": 2,
    }
    rollup = agg.rollup(now=1.0, interval=1.0)
    assert {s.name for s in rollup.series} == {"ok", "ok.timer"}
    assert only(rollup, "ok").stats["sum"] == 3


# -- bounded memory ------------------------------------------------------------------------
def test_series_cap_counts_dropped_series() -> None:
    agg = Aggregator(max_series=3)
    agg.add_events([ev(C, f"c{n}", 1) for n in range(5)])
    agg.add_events([ev(T, "timer.new", 0.1), ev(G, "gauge.new", 1)])
    agg.add_events([ev(C, "c0", 1)])  # an existing series still counts
    assert agg.series_count == 3
    assert agg.dropped_series == 4
    rollup = agg.rollup(now=1.0, interval=1.0)
    assert len(rollup.series) == 3
    assert only(rollup, "c0").stats["sum"] == 2
    # a new interval has room again
    agg.add_events([ev(C, "c4", 1)])
    assert only(agg.rollup(now=2.0, interval=1.0), "c4").stats["sum"] == 1


def test_repeated_identical_events_do_not_grow_memory() -> None:
    agg = Aggregator(max_values=1000)
    for _ in range(20):
        agg.add_events([ev(C, "same", 1, "src", {"a": "b"})] * 500)
        agg.add_events([ev(T, "same.t", 0.001, "src", {"a": "b"})] * 500)
        agg.add_events([ev(G, "same.g", 4, "src", {"a": "b"})] * 500)
        assert agg.series_count == 3
    rollup = agg.rollup(now=1.0, interval=1.0)
    assert only(rollup, "same").stats["sum"] == 10_000
    timer = only(rollup, "same.t")
    assert timer.stats["count"] == 10_000
    assert len(timer.values) <= 1000


def test_max_values_sampling_keeps_moments_exact_and_percentiles_close() -> None:
    rng = random.Random(42)
    values = [rng.uniform(0, 1) for _ in range(20_000)]
    # Put the extremes among the first values, before sampling starts.
    values[0], values[1] = -5.0, 9.0
    agg = Aggregator(max_values=500, rng=random.Random(1))
    agg.add_events([ev(T, "t", v) for v in values])
    assert agg.sampled_values == 19_500
    series = only(agg.rollup(now=1.0, interval=1.0), "t")
    stats = series.stats
    assert len(series.values) == 500
    assert stats["count"] == 20_000
    assert stats["min"] == -5.0
    assert stats["max"] == 9.0
    assert stats["sum"] == pytest.approx(math.fsum(values), rel=1e-9)
    assert stats["mean"] == pytest.approx(statistics.fmean(values), rel=1e-9)
    assert stats["stddev"] == pytest.approx(statistics.pstdev(values), rel=1e-6)
    ref = reference(values, (90, 95, 99))
    for key in ("median", "p90", "p95", "p99"):
        assert stats[key] == pytest.approx(ref[key], abs=0.05), key


def test_max_values_sampling_percentiles_are_approximately_right() -> None:
    # Only the sampled statistics, on data whose first values are not special.
    rng = random.Random(9)
    values = [rng.uniform(0, 1) for _ in range(20_000)]
    agg = Aggregator(max_values=1000, rng=random.Random(2))
    agg.add_events([ev(T, "t", v) for v in values])
    stats = only(agg.rollup(now=1.0, interval=1.0), "t").stats
    assert stats["count"] == 20_000
    ref = reference(values, (90, 95, 99))
    for key in ("median", "p90", "p95", "p99"):
        assert stats[key] == pytest.approx(ref[key], abs=0.05), key
