"""Running totals for cumulative targets (``zibrato.backends.toolkit.cumulative``): pure
computation, checked against brute force."""

from __future__ import annotations

import bisect
import math

from hypothesis import given
from hypothesis import strategies as st

from zibrato.aggregation import Series, distribution_stats
from zibrato.backends.toolkit.cumulative import (
    INT64_MAX,
    CumulativeStore,
    interval_buckets,
)

BOUNDS = (0.1, 1.0, 10.0)


def counter(name: str, total: float) -> Series:
    return Series(name, "counter", None, {}, {"sum": total, "rate": total / 10})


def timer(name: str, values: list[float], count: float | None = None) -> Series:
    values = sorted(values)
    stats = distribution_stats(values)
    if count is not None:
        stats["count"] = count
    return Series(name, "timer", None, {}, stats, values)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=50))
def test_every_value_kept_gives_exact_bucket_counts(values: list[float]) -> None:
    counts = interval_buckets(sorted(values), len(values), BOUNDS)
    expected = [0] * (len(BOUNDS) + 1)
    for value in values:  # a value on a bound belongs to that bound's bucket (le)
        expected[next((i for i, b in enumerate(BOUNDS) if value <= b), len(BOUNDS))] += 1
    assert counts == expected


@given(st.lists(finite, min_size=1, max_size=50), st.floats(0, 1e6))
def test_sampled_bucket_counts_add_up_to_the_rounded_count(
    values: list[float], extra: float
) -> None:
    count = len(values) + extra  # the aggregator or the client sampled
    counts = interval_buckets(sorted(values), count, BOUNDS)
    assert sum(counts) == math.floor(count + 0.5) and min(counts) >= 0
    kept = [0] * (len(BOUNDS) + 1)
    for value in values:
        kept[bisect.bisect_left(BOUNDS, value)] += 1
    for got, share in zip(counts, kept, strict=True):  # each within 1 of its fair share
        assert abs(got - math.floor(count + 0.5) * share / len(values)) < 1


def test_runs_add_up_keep_their_start_and_restart_after_going_quiet() -> None:
    store: CumulativeStore[str] = CumulativeStore(buckets=lambda s: BOUNDS, ttl=60)
    assert store.update("hits", counter("hits", 2), start=0, now=10).value == 2
    run = store.update("hits", counter("hits", 3), start=10, now=20)
    assert (run.value, run.start) == (5, 0)
    load = store.update("load", timer("load", [0.05, 2.0]), start=10, now=20)
    load = store.update("load", timer("load", [0.5]), start=20, now=30)
    assert load.histogram is not None
    assert (load.histogram.counts, load.histogram.count) == ([1, 1, 1, 0], 3)
    assert (load.histogram.min, load.histogram.max) == (0.05, 2.0)
    gone = store.expire(now=81)  # hits: 61 s without an update
    assert [key for key, _ in gone] == ["hits"] and store.get("load") is not None
    run = store.update("hits", counter("hits", 1), start=100, now=110)
    assert (run.value, run.start) == (1, 100)  # a new run: a reset


def test_an_integer_total_past_int64_starts_a_new_run() -> None:
    store: CumulativeStore[str] = CumulativeStore(buckets=lambda s: BOUNDS)
    store.update("big", counter("big", INT64_MAX - 1), start=0, now=10)
    run = store.update("big", counter("big", 5), start=10, now=20)
    assert (run.value, run.start) == (5, 10)


def test_the_least_recently_updated_go_first_but_never_for_health_series() -> None:
    forgotten: list[str] = []
    store: CumulativeStore[str] = CumulativeStore(
        buckets=lambda s: BOUNDS, max_series=2, on_forget=forgotten.append
    )
    store.update("zibrato.backend.events", counter("zibrato.backend.events", 1), start=0, now=1)
    for i, name in enumerate(["a", "b", "c"]):
        store.update(name, counter(name, 1), start=0, now=2 + i)
    assert forgotten == ["a"] and store.evicted == 1
    assert store.get("zibrato.backend.events") is not None and len(store) == 3
