"""The SQLite history: what is written reads back, survives a restart, ages into coarser
tiers exactly as the downsampling math says, and stops growing."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zibrato.aggregation import distribution_stats
from zibrato.backends.dashboard.downsampling import Point, Tier, merge, point_from_stats
from zibrato.backends.dashboard.store import (
    RECEIVED,
    ROUTE,
    HistoryError,
    HistoryStore,
    identity,
)
from zibrato.errors import ConfigError

TIERS = (Tier(0, 10), Tier(5, 30), Tier(15, 60))
HITS = identity(RECEIVED, "hits", "counter", None, {"shop": "eu"})
LOAD = identity(RECEIVED, "orders.load", "timer", "web-1", {})
ROUTE_LOAD = identity(ROUTE, "http.server.request.duration", "timer", None, {"http.route": "/a"})
START = 1_700_000_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


def opened(path: Path, **options: object) -> HistoryStore:
    store = HistoryStore(path, **{"tiers": TIERS, **options})  # type: ignore[arg-type]
    store.open()
    return store


def timer_point(ts: float, values: list[float]) -> Point:
    return point_from_stats("timer", distribution_stats(sorted(values)), ts)


def ids(store: HistoryStore) -> dict[tuple[str, int], int]:
    return {(s.name, s.scope): s.id for s in store.list_series()}


def flush_values(n: int) -> list[float]:
    """The timer values of flush ``n``: different every time, so buckets differ."""
    return [0.001 * (n % 7 + 1), 0.002 * (n % 5 + 1), 0.05 + 0.001 * n]


def test_points_read_back_as_written_with_microsecond_timers(path: Path) -> None:
    store = opened(path)
    try:
        timer = timer_point(START, [0.0123456, 0.5, 0.25])
        store.write(START, 10.0, [(HITS, Point(START, sum=3)), (LOAD, timer)])
        found = ids(store)
        points = store.points(found.values(), START - 60, START)
        assert points[found["hits", RECEIVED]] == [Point(START, sum=3)]
        (back,) = points[found["orders.load", RECEIVED]]
        for name in ("count", "sum", "min", "max", "p50", "p90", "p95", "p99"):
            assert getattr(back, name) == pytest.approx(getattr(timer, name), abs=1e-6), name
        assert store.coverage(START - 60, START) == [Point(START, count=1, sum=10.0)]
        assert store.last_flush() == START
        (hits,) = [s for s in store.list_series() if s.name == "hits"]
        assert (hits.type, hits.source, dict(hits.tags)) == ("counter", None, {"shop": "eu"})
    finally:
        store.close()


def test_a_restart_loses_nothing_already_written(path: Path) -> None:
    store = opened(path)
    for n in range(1, 6):
        store.write(
            START + n,
            1.0,
            [(HITS, Point(START + n, sum=n)), (ROUTE_LOAD, timer_point(START + n, [0.1]))],
        )
    store.close()
    again = opened(path)
    try:
        assert again.series_count == 2
        assert again.last_flush() == START + 5
        found = ids(again)
        points = again.points([found["hits", RECEIVED]], START, START + 5)
        assert [p.sum for p in points[found["hits", RECEIVED]]] == [1, 2, 3, 4, 5]
        again.write(START + 6, 1.0, [(HITS, Point(START + 6, sum=6))])
        assert again.series_count == 2  # the same series, not a new one
        assert len(again.coverage(START, START + 6)) == 6
        assert {s.scope for s in again.list_series()} == {RECEIVED, ROUTE}
    finally:
        again.close()


def test_points_age_into_coarser_tiers_as_the_downsampling_math_says(path: Path) -> None:
    store = opened(path)
    raw: list[tuple[float, Point]] = []
    try:
        for n in range(1, 101):  # 100 one-second flushes, compacted after each as live
            ts = START + n
            point = timer_point(ts, flush_values(n))
            raw.append((ts, point))
            store.write(ts, 1.0, [(LOAD, point)])
            store.compact(ts)
        now = START + 100
        series_id = ids(store)["orders.load", RECEIVED]
        stored = store.points([series_id], 0, now)[series_id]
        assert stored[0].ts > now - 60 - 15  # the last tier keeps 60 s (a bucket at a time)
        expected = []
        for point in stored:
            if point.ts > now - 10:  # raw: one point per flush
                (members,) = [[p for ts, p in raw if ts == point.ts]]
            else:
                step = 5 if point.ts > now - 30 else 15
                members = [p for ts, p in raw if point.ts - step < ts <= point.ts]
            assert members, point
            expected.append(merge(members, point.ts))
        for got, want in zip(stored, expected, strict=True):
            assert got.count == want.count and got.ts == want.ts
            for name in ("sum", "min", "max", "p50", "p95", "p99"):
                assert getattr(got, name) == pytest.approx(getattr(want, name), abs=2e-6), name
        spans = store.coverage(0, now)
        assert [p.ts for p in spans] == [p.ts for p in stored]
        assert math.fsum(p.sum or 0 for p in spans) == pytest.approx(
            sum(p.count or 0 for p in stored) / 3
        )
        assert store.point_counts()[0] == 2 * 10  # the raw tier: 10 flushes, with their spans
    finally:
        store.close()


def test_the_file_stops_growing_once_the_oldest_tier_is_full(path: Path) -> None:
    store = opened(path, tiers=(Tier(0, 20), Tier(5, 60), Tier(20, 120)))
    keys = [
        identity(RECEIVED, f"route.{i}", "timer", None, {"http.route": f"/r/{i}"})
        for i in range(40)
    ]
    sizes = []
    try:
        for n in range(1, 1201):
            ts = START + n
            store.write(
                ts, 1.0, [(key, timer_point(ts, flush_values(n + i))) for i, key in enumerate(keys)]
            )
            store.compact(ts)
            if n in (400, 800, 1200):
                sizes.append(
                    (os.path.getsize(path) + os.path.getsize(f"{path}-wal"), store.point_counts())
                )
    finally:
        store.close()
    (size_400, counts_400), (size_800, counts_800), (size_1200, counts_1200) = sizes
    assert counts_800 == counts_1200 == counts_400  # 120 s kept: steady long before 400 s
    assert size_1200 <= size_800 * 1.05 and size_800 <= size_400 * 1.2


def test_series_past_the_cap_are_counted_not_stored(path: Path) -> None:
    store = opened(path, max_series=2)
    try:
        others = [identity(RECEIVED, f"extra.{i}", "counter", None, {}) for i in range(3)]
        store.write(START, 1.0, [(HITS, Point(START, sum=1)), (LOAD, timer_point(START, [1.0]))])
        store.write(START + 1, 1.0, [(key, Point(START + 1, sum=1)) for key in (HITS, *others)])
        assert store.series_count == 2
        assert store.capped_points == 3
        assert {s.name for s in store.list_series()} == {"hits", "orders.load"}
    finally:
        store.close()


def test_series_whose_points_all_expired_are_forgotten(path: Path) -> None:
    store = opened(path)
    try:
        store.write(START, 1.0, [(HITS, Point(START, sum=1))])
        store.write(START + 200, 1.0, [(LOAD, timer_point(START + 200, [1.0]))])
        store.compact(START + 200)
        assert {s.name for s in store.list_series()} == {"orders.load"}
        assert store.series_count == 1
    finally:
        store.close()


def test_a_late_point_merges_into_the_bucket_already_built(path: Path) -> None:
    store = opened(path)
    try:
        store.write(START + 1, 1.0, [(HITS, Point(START + 1, sum=2))])
        store.compact(START + 16)  # START + 1 is now in the 5-second bucket ending START + 5
        store.write(START + 3, 1.0, [(HITS, Point(START + 3, sum=5))])  # the clock stepped back
        store.compact(START + 21)
        series_id = ids(store)["hits", RECEIVED]
        assert store.points([series_id], 0, START + 100)[series_id] == [Point(START + 5, sum=7)]
    finally:
        store.close()


finite = st.floats(allow_nan=False, allow_infinity=False)
# The aggregator's own statistics overflow near the float limit (math.fsum raises): keep
# values where it computes them; the store's handling of huge values is tested below.
aggregatable = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(aggregatable, min_size=1, max_size=5), finite)
def test_any_finite_value_a_peer_sends_is_stored_or_dropped_never_an_error(
    path: Path, values: list[float], counter: float
) -> None:
    store = opened(path)
    try:
        point = timer_point(START, values)
        store.write(START, 1.0, [(LOAD, point), (HITS, Point(START, sum=counter))])
        found = ids(store)
        (back,) = store.points([found["orders.load", RECEIVED]], 0, START)[
            found["orders.load", RECEIVED]
        ]
        for name in ("min", "max", "p50"):
            value = getattr(back, name)
            assert value is None or value == pytest.approx(getattr(point, name), rel=1e-6, abs=1e-6)
        (hits,) = store.points([found["hits", RECEIVED]], 0, START)[found["hits", RECEIVED]]
        assert hits.sum == counter
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(f"{path}{suffix}"):
                os.remove(f"{path}{suffix}")


def test_a_file_that_is_not_a_history_is_a_clear_config_error(path: Path) -> None:
    path.write_text("not a database, just text\n" * 100)
    with pytest.raises(ConfigError, match=r"cannot use .* as the dashboard history"):
        opened(path)
    other = path.with_name("other.sqlite3")
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    connection.close()
    with pytest.raises(HistoryError, match="something other than a zibrato dashboard history"):
        opened(other)


def test_a_failed_write_stores_nothing_and_is_counted(path: Path) -> None:
    store = opened(path, lock_timeout=0.05)
    try:
        store.write(START, 1.0, [(HITS, Point(START, sum=1))])
        # Another connection holds the write lock: our write cannot get in.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        load = timer_point(START + 1, [1.0])
        with pytest.raises(sqlite3.OperationalError):
            store.write(START + 1, 1.0, [(HITS, Point(START + 1, sum=1)), (LOAD, load)])
        blocker.execute("ROLLBACK")
        blocker.close()
        assert store.failed_points == 2
        assert store.series_count == 1  # the new series was not kept either
        store.write(START + 2, 1.0, [(LOAD, timer_point(START + 2, [1.0]))])  # and it recovers
        assert store.series_count == 2
        assert len(store.coverage(0, START + 2)) == 2
    finally:
        store.close()
