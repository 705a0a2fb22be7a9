"""Merging two intervals' rollups gives what one interval holding both would have given."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zibrato.aggregation import Aggregator, Rollup, Series, distribution_stats
from zibrato.backends.toolkit.merge import merge_rollups

PERCENTILES = (50, 90, 99.9)
Event = tuple[int, str, float, None, dict[str, str] | None]


def aggregate(events: Sequence[Event], now: float, interval: float, max_values: int) -> Rollup:
    aggregator = Aggregator(percentiles=PERCENTILES, max_values=max_values, rng=random.Random(1))
    aggregator.add_events(events)
    return aggregator.rollup(now=now, interval=interval)


def by_key(rollup: Rollup) -> dict[tuple[object, ...], Series]:
    return {series.key(): series for series in rollup.series}


values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda v: round(v, 3))
events = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 3, 4]),  # counter, gauge, timer, distribution
        st.sampled_from(["a", "b"]),
        values,
        st.none(),
        st.sampled_from([None, {"k": "v"}]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(first=events, second=events)
def test_merging_equals_aggregating_both_intervals_at_once(
    first: list[Event], second: list[Event]
) -> None:
    earlier = aggregate(first, now=100.0, interval=10.0, max_values=1000)
    later = aggregate(second, now=103.0, interval=3.0, max_values=1000)
    joint = aggregate([*first, *second], now=100.0, interval=13.0, max_values=1000)
    merged = merge_rollups(earlier, later, PERCENTILES)
    assert (merged.timestamp, merged.interval) == (100.0, 13.0)
    got, want = by_key(merged), by_key(joint)
    assert got.keys() == want.keys()
    for key, series in want.items():
        assert got[key].values == series.values
        assert got[key].stats.keys() == series.stats.keys()
        for stat, value in series.stats.items():
            assert got[key].stats[stat] == pytest.approx(value, rel=1e-9, abs=1e-6), stat


def test_a_gauge_keeps_the_later_value() -> None:
    earlier = aggregate([(1, "g", 5, None, None)], now=10.0, interval=10.0, max_values=10)
    later = aggregate([(1, "g", -2, None, None)], now=12.0, interval=2.0, max_values=10)
    (gauge,) = merge_rollups(earlier, later, PERCENTILES).series
    assert gauge.stats == {"value": -2}


def test_sampled_intervals_keep_exact_moments() -> None:
    rng = random.Random(7)
    first = [rng.uniform(0, 1) for _ in range(500)]
    second = [rng.uniform(5, 6) for _ in range(300)]
    earlier = aggregate([(3, "t", v, None, None) for v in first], 10.0, 10.0, max_values=50)
    later = aggregate([(3, "t", v, None, None) for v in second], 12.0, 2.0, max_values=50)
    (timer,) = merge_rollups(earlier, later, PERCENTILES).series
    both = first + second
    # One sample at the lower rate (50 of 500): 50 from the first interval, 30 from the second.
    assert len(timer.values) == 80
    assert sum(v < 1 for v in timer.values) == 50
    assert timer.stats["count"] == 800
    assert timer.stats["sum"] == pytest.approx(math.fsum(both))
    assert (timer.stats["min"], timer.stats["max"]) == (min(both), max(both))
    assert timer.stats["mean"] == pytest.approx(statistics.fmean(both))
    assert timer.stats["stddev"] == pytest.approx(statistics.pstdev(both), rel=1e-6)
    assert 0 <= timer.stats["median"] <= 1 < 5 <= timer.stats["p90"] <= 6  # not over-weighted


def test_a_sampled_merge_keeps_the_aggregators_statistics_in_order() -> None:
    def sampled(values: list[float], count: int) -> Series:
        stats = dict(distribution_stats(values, PERCENTILES))
        stats.pop("sum_squares")  # a producer may leave it out: derived from stddev and mean
        stats["count"] = count
        return Series("t", "timer", None, {}, stats, values)

    earlier = Rollup(10.0, 10.0, (sampled([1.0, 2.0], 4),))
    later = Rollup(12.0, 2.0, (sampled([3.0], 2),))
    (timer,) = merge_rollups(earlier, later, PERCENTILES).series
    assert list(timer.stats) == list(distribution_stats([1.0], PERCENTILES))
    assert timer.stats["count"] == 6
