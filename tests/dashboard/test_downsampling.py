"""Downsampling math: exact where it can be, and what the merged percentiles mean."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zibrato.aggregation import distribution_stats
from zibrato.backends.dashboard.downsampling import (
    PERCENTILES,
    Point,
    Tier,
    bucket_end,
    compaction_cutoff,
    downsample,
    merge,
    point_from_stats,
)

durations = st.floats(min_value=1e-6, max_value=100.0, allow_nan=False)
intervals = st.lists(st.lists(durations, min_size=1, max_size=30), min_size=1, max_size=12)


def flush_point(ts: float, values: list[float]) -> Point:
    return point_from_stats("timer", distribution_stats(sorted(values)), ts)


@given(intervals)
def test_count_sum_min_max_stay_exact_against_every_value(groups: list[list[float]]) -> None:
    merged = merge([flush_point(10.0 * i, g) for i, g in enumerate(groups, 1)], 600.0)
    pooled = [v for g in groups for v in g]
    assert merged.count == len(pooled)
    assert merged.sum == pytest.approx(math.fsum(pooled), rel=1e-12)
    assert merged.min == min(pooled) and merged.max == max(pooled)
    assert merged.mean == pytest.approx(statistics.fmean(pooled), rel=1e-9)


@given(intervals)
def test_a_merged_percentile_is_the_count_weighted_mean_within_the_merged_range(
    groups: list[list[float]],
) -> None:
    points = [flush_point(10.0 * i, g) for i, g in enumerate(groups, 1)]
    merged = merge(points, 600.0)
    for name in PERCENTILES:
        each = [getattr(p, name) for p in points]
        expected = math.fsum(len(g) * v for g, v in zip(groups, each, strict=True)) / sum(
            len(g) for g in groups
        )
        assert getattr(merged, name) == pytest.approx(expected, rel=1e-9)
        assert min(each) * (1 - 1e-12) <= getattr(merged, name) <= max(each) * (1 + 1e-12)


def test_merged_percentiles_track_the_pooled_ones_when_the_traffic_is_steady() -> None:
    rng = random.Random(12)
    groups = [[rng.lognormvariate(-3, 0.8) for _ in range(2000)] for _ in range(6)]
    merged = merge([flush_point(10.0 * i, g) for i, g in enumerate(groups, 1)], 60.0)
    pooled = sorted(v for g in groups for v in g)
    cuts = statistics.quantiles(pooled, n=100, method="inclusive")
    for name, cut in (("p50", cuts[49]), ("p90", cuts[89]), ("p95", cuts[94]), ("p99", cuts[98])):
        assert getattr(merged, name) == pytest.approx(cut, rel=0.05), name


def test_a_spike_shows_in_max_but_is_diluted_in_a_merged_percentile() -> None:
    quiet = [flush_point(10.0 * i, [0.01] * 100) for i in range(1, 6)]
    spike = flush_point(60.0, [2.0] * 100)
    merged = merge([*quiet, spike], 60.0)
    assert merged.max == 2.0
    assert merged.p99 == pytest.approx((5 * 0.01 + 2.0) / 6)


@given(intervals, st.integers(min_value=1, max_value=5))
def test_tiers_agree_merging_in_two_steps_equals_merging_at_once(
    groups: list[list[float]], split: int
) -> None:
    points = [flush_point(10.0 * i, g) for i, g in enumerate(groups, 1)]
    at_once = merge(points, 600.0)
    buckets = [
        merge(points[i : i + split], 10.0 * (i + split)) for i in range(0, len(points), split)
    ]
    in_steps = merge(buckets, 600.0)
    assert in_steps.count == at_once.count and in_steps.max == at_once.max
    for name in ("sum", *PERCENTILES):
        assert getattr(in_steps, name) == pytest.approx(getattr(at_once, name), rel=1e-9)


def test_counters_add_up_and_gauges_keep_the_last_value() -> None:
    counters = [
        point_from_stats("counter", {"sum": s, "rate": s / 10}, t) for t, s in ((10, 3), (20, 4))
    ]
    assert merge(counters, 60) == Point(60, sum=7)
    gauges = [point_from_stats("gauge", {"value": v}, t) for t, v in ((30, 5), (10, 9), (20, -2))]
    assert merge(gauges, 60) == Point(60, last=5, min=-2, max=9)


def test_points_without_values_stay_empty_and_non_finite_statistics_become_none() -> None:
    assert merge([], 60) == Point(60)
    point = point_from_stats("counter", {"sum": math.inf, "rate": math.inf}, 10)
    assert point.sum is None
    assert point_from_stats("timer", {"count": 2, "sum": math.nan}, 10).sum is None


def test_sums_that_overflow_become_none_and_never_raise() -> None:
    huge = [
        Point(10, count=1, sum=1.7e308, p99=1.7e308),
        Point(20, count=1, sum=1.7e308, p99=1.7e308),
    ]
    merged = merge(huge, 60)
    assert merged.sum is None and merged.p99 is None and merged.count == 2
    assert merge([Point(10, sum=-1.7e308), Point(20, sum=-1.7e308)], 60).sum is None


def test_buckets_are_stamped_at_their_end() -> None:
    assert bucket_end(60.0, 60) == 60.0
    assert bucket_end(60.001, 60) == 120.0
    assert bucket_end(0.5, 60) == 60.0
    points = [Point(t, sum=1) for t in (10, 50, 60, 61, 119, 185)]
    assert [(p.ts, p.sum) for p in downsample(points, 60)] == [(60, 3), (120, 2), (240, 1)]


def test_a_cutoff_is_rounded_to_the_following_tier_so_buckets_are_whole() -> None:
    raw, minutes, hours = Tier(0, 3600), Tier(60, 6 * 3600), Tier(3600, 86400)
    assert compaction_cutoff(10_000.0, raw, minutes) == 6360.0  # 10 000 - 3600, floored to 60
    assert compaction_cutoff(100_000.0, minutes, hours) == 75_600.0
    assert compaction_cutoff(100_000.5, hours, None) == 10_800.0  # the last tier, by its step
