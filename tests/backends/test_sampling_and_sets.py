"""Sampled events (``rate=``) and sets, end to end: a client, a real ``zibrato broker``
subprocess, a backend that aggregates them, and what every built-in backend makes of the
rollup. The client's rng is seeded, so exactly which events were sampled is known.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from backend_support import wait_subscribed

from zibrato import Zibrato
from zibrato.aggregation import Aggregator, Rollup, Series
from zibrato.backends.base import Backend
from zibrato.backends.console import render_table
from zibrato.backends.graphite import GraphiteBackend
from zibrato.backends.jsonl import series_record
from zibrato.backends.librato import measurement
from zibrato.backends.prometheus import PrometheusBackend
from zibrato.backends.statsd import StatsdBackend
from zibrato.backends.toolkit.merge import merge_rollups

NOWHERE = "tcp://127.0.0.1:1"  # rendering only: these backends never start
SEED = 1126
WAIT = 15.0


class KeepingBackend(Backend):
    """Keeps every rollup; flushes only when stopped (the interval is long)."""

    kind = "keeping"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self.rollups: list[Rollup] = []
        self._rollups_lock = threading.Lock()

    def emit(self, rollup: Rollup) -> None:
        with self._rollups_lock:
            self.rollups.append(rollup)

    def series(self, name: str) -> Series:
        (found,) = [s for r in self.rollups for s in r.series if s.name == name]
        return found


@pytest.fixture
def keeping_backend(broker: Any) -> Iterator[KeepingBackend]:
    backend = KeepingBackend(connect=broker.backend, flush_interval=3600)
    backend.start()
    try:
        wait_subscribed(broker.frontend, [b"info"])
        yield backend
    finally:
        backend.stop()


def send_and_collect(backend: KeepingBackend, clients: list[Zibrato], events: int) -> Rollup:
    """Flush ``clients``, wait until ``events`` events reached ``backend``, stop it (its final
    flush holds everything) and return the rollup."""
    for client in clients:
        client.flush()
    deadline = time.monotonic() + WAIT
    while backend.received_events < events:
        assert time.monotonic() < deadline, f"{backend.received_events} of {events} events came"
        time.sleep(0.02)
    backend.stop()
    (rollup,) = backend.rollups
    return rollup


def test_sampled_counters_and_timers_are_scaled_by_rate(
    keeping_backend: KeepingBackend, broker: Any
) -> None:
    z = Zibrato(broker.frontend, rng=random.Random(SEED))
    try:
        for _ in range(1000):
            z.incr("cache.hits", rate=0.1)
        durations = [n / 1000 for n in range(1, 401)]
        for seconds in durations:
            z.timing("cache.get", seconds, rate=0.25)
        z.incr("plain", 5)
        # Which events the seeded rng kept, drawn in the same order as the client did.
        draws = random.Random(SEED)
        hits = sum(draws.random() < 0.1 for _ in range(1000))
        kept = [seconds for seconds in durations if draws.random() < 0.25]
        rollup = send_and_collect(keeping_backend, [z], hits + len(kept) + 1)
    finally:
        z.close()

    assert 50 < hits < 150 and 60 < len(kept) < 140  # the seed's draws: sanity only
    hits_series = keeping_backend.series("cache.hits")
    assert hits_series.stats["sum"] == pytest.approx(10 * hits)
    assert hits_series.stats["rate"] == pytest.approx(10 * hits / rollup.interval)
    timer = keeping_backend.series("cache.get")
    assert list(timer.values) == kept  # each kept value once
    assert timer.stats["count"] == 4 * len(kept)  # each stands for 1 / rate events
    assert timer.stats["sum"] == pytest.approx(4 * math.fsum(kept))
    assert timer.stats["mean"] == pytest.approx(math.fsum(kept) / len(kept))
    assert timer.stats["min"] == kept[0] and timer.stats["max"] == kept[-1]
    mean = math.fsum(kept) / len(kept)
    stddev = math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / len(kept))
    assert timer.stats["stddev"] == pytest.approx(stddev, rel=1e-6)
    assert keeping_backend.series("plain").stats["sum"] == 5

    # statsd: the scaled sum for the counter, every kept value with |@0.25 for the timer
    lines = StatsdBackend(connect=NOWHERE).lines(rollup)
    (hits_line,) = [line for line in lines if line.startswith("cache.hits:")]
    assert float(hits_line.removeprefix("cache.hits:").removesuffix("|c")) == pytest.approx(
        10 * hits
    )
    timer_lines = [line for line in lines if line.startswith("cache.get:")]
    assert len(timer_lines) == len(kept)
    assert all(line.endswith("|ms|@0.25") for line in timer_lines)
    # prometheus: _count and the buckets are scaled to the events the values stand for
    prometheus = PrometheusBackend(connect=NOWHERE, listen="127.0.0.1:0")
    prometheus.emit(rollup)
    text = prometheus.exposition().decode()
    assert f"cache_get_seconds_count {4 * len(kept)}" in text
    assert f'cache_get_seconds_bucket{{le="+Inf"}} {4 * len(kept)}' in text
    fast = sum(1 for v in kept if v <= 0.1)
    assert f'cache_get_seconds_bucket{{le="0.1"}} {4 * fast}' in text
    # jsonl and librato: the scaled count
    assert series_record(rollup, timer)["count"] == 4 * len(kept)
    point = measurement(timer, 0, None)
    assert point is not None and point["count"] == 4 * len(kept)


def test_sets_count_distinct_members_across_publishers(
    keeping_backend: KeepingBackend, broker: Any
) -> None:
    first, second = Zibrato(broker.frontend), Zibrato(broker.frontend, source="web-2")
    try:
        for index in range(60):
            first.set("users.active", f"user-{index % 25}")  # 25 distinct
            second.set("users.active", index % 30, source=None)  # 0..29, some of them text
        second.set("users.active", "user-3")  # already seen by the other publisher
        first.set("users.active", "user-1", tags={"shop": "eu"})
        first.set("users.active", 3.5)  # not a member: dropped by the client
        rollup = send_and_collect(keeping_backend, [first, second], 60 + 60 + 2)
        assert first.stats()["dropped"] == {"invalid_value": 1}
    finally:
        first.close()
        second.close()

    by_source = {
        (s.source, tuple(s.tags.items())): s.stats["value"]
        for s in rollup.series
        if s.name == "users.active"
    }
    assert by_source == {(None, ()): 25, ("web-2", ()): 31, (None, (("shop", "eu"),)): 1}
    assert {s.type for s in rollup.series if s.name == "users.active"} == {"set"}


def test_every_builtin_backend_renders_a_set() -> None:
    agg = Aggregator()
    agg.add_events([(5, "users.active", member, None, {"shop": "eu"}) for member in "abcab"])
    rollup = agg.rollup(now=1_700_000_000.0, interval=10.0)
    (series,) = rollup.series
    assert (series.type, series.stats) == ("set", {"value": 3})

    assert StatsdBackend(connect=NOWHERE).lines(rollup) == ["users.active.shop.eu:3|g"]
    dogstatsd = StatsdBackend(connect=NOWHERE, tag_style="dogstatsd").lines(rollup)
    assert dogstatsd == ["users.active:3|g|#shop:eu"]
    graphite = GraphiteBackend(connect=NOWHERE).lines(rollup)
    assert graphite == [b"users.active.shop.eu 3 1700000000\n"]
    prometheus = PrometheusBackend(connect=NOWHERE, listen="127.0.0.1:0")
    prometheus.emit(rollup)
    text = prometheus.exposition().decode()
    assert "# TYPE users_active gauge" in text
    assert 'users_active{shop="eu"} 3' in text
    point = measurement(series, 1_700_000_000, None)
    assert point is not None
    assert (point["name"], point["value"]) == ("users.active.shop_eu", 3)
    record = series_record(rollup, series)
    assert (record["type"], record["value"]) == ("set", 3)
    json.dumps(record, allow_nan=False)
    table = render_table(rollup, list(rollup.series))
    assert re.search(r"^users\.active shop=eu +3$", table, re.MULTILINE), table


def test_graphite_merges_two_intervals_of_a_set() -> None:
    # Two flushes in one second are merged into one Graphite point (see merge.py).
    first = Rollup(10.0, 5.0, (Series("users", "set", None, {}, {"value": 7}),))
    second = Rollup(10.5, 0.5, (Series("users", "set", None, {}, {"value": 3}),))
    (merged,) = merge_rollups(first, second, (90,)).series
    assert (merged.type, dict(merged.stats)) == ("set", {"value": 7})


def test_set_members_are_bounded_per_series_and_the_overflow_counted() -> None:
    agg = Aggregator(max_set_members=10)
    agg.add_events([(5, "ids", n, None, None) for n in range(25)])
    agg.add_events([(5, "ids", n, None, None) for n in range(10)])  # already members
    agg.add_events([(5, "other", "x", None, None)])  # another series has its own bound
    assert agg.dropped_set_members == 15
    values = {s.name: s.stats["value"] for s in agg.rollup(now=0.0, interval=1.0).series}
    assert values == {"ids": 10, "other": 1}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ((0, "x", 1, None, None, 0), "invalid_rate"),
        ((0, "x", 1, None, None, 2), "invalid_rate"),
        ((0, "x", 1, None, None, "0.5"), "invalid_rate"),
        ((0, "x", 1, None, None, 0.5, "extra"), "invalid_event"),
        ((5, "x", 1.5, None, None), "invalid_value"),
        ((5, "x", "m" * 256, None, None), "invalid_value"),
        ((5, "x", None, None, None), "invalid_value"),
        ((0, "x", "member", None, None), "invalid_value"),
    ],
)
def test_the_aggregator_rejects_what_check_event_rejects(event: Any, reason: str) -> None:
    from zibrato import protocol

    assert protocol.check_event(event) == reason
    agg = Aggregator()
    agg.add_events([event])
    assert agg.rejected == {reason: 1}
    assert agg.series_count == 0


def test_a_sampled_gauge_or_set_ignores_the_rate() -> None:
    agg = Aggregator()
    agg.add_events([(1, "g", 7, None, None, 0.5), (5, "s", "a", None, None, 0.5)])
    stats = {s.name: dict(s.stats) for s in agg.rollup(now=0.0, interval=1.0).series}
    assert stats == {"g": {"value": 7}, "s": {"value": 1}}
