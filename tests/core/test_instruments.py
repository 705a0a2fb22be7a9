"""Timer and counter objects: one type per kind, transparent decorators, filtered levels;
sampling (``rate=``), ``decr``, sets, ``start()``/``stop()`` and ``timedelta`` durations,
checked in a capture (what crosses the wire is in ``test_sampling_e2e.py``)."""

from __future__ import annotations

import asyncio
import inspect
import math
import random
import time
from datetime import timedelta

import pytest

from zibrato import Counter, Timer, Zibrato
from zibrato.testing import capture


def test_every_spelling_gives_the_same_object_type(new_client, dead_address):
    z = new_client(publish=dead_address)
    assert type(z.time_me(name="a")) is type(z.Time_me(name="a")) is type(z.timer("a")) is Timer
    assert (
        type(z.count_me(name="a")) is type(z.Count_me(name="a")) is type(z.counter("a")) is Counter
    )


def test_decorators_preserve_the_function(new_client, dead_address):
    z = new_client(publish=dead_address)

    def plain(x, *, y=1):
        """Plain docs."""
        return x + y

    async def coro(x):
        """Async docs."""
        return x

    for instrument in (z.timer("t"), z.time_me(name="t2"), z.counter("c"), z.count_me(name="c2")):
        wrapped = instrument(plain)
        assert wrapped is not plain
        assert (wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__) == (
            "plain",
            "Plain docs.",
            plain,
        )
        assert inspect.signature(wrapped) == inspect.signature(plain)
        assert wrapped(1, y=2) == 3
        wrapped_async = instrument(coro)
        assert wrapped_async.__name__ == "coro"
        assert inspect.iscoroutinefunction(wrapped_async)
        assert asyncio.run(wrapped_async(5)) == 5


def test_decorator_at_a_filtered_level_returns_the_function_unchanged(new_client, dead_address):
    z = new_client(publish=dead_address, level="warning")

    def work():
        return "worked"

    async def work_async():
        return "worked"

    assert z.time_me(level="info", name="a")(work) is work
    assert z.timer("a", level="debug")(work_async) is work_async
    assert z.count_me(level="info", name="c", value=5)(work) is work
    assert z.counter("c")(work) is work  # the default event level, info, is below warning
    assert z.timer("kept", level="error")(work) is not work

    with capture() as metrics:
        ran = []
        with z.Time_me(level="debug", name="filtered.block"):
            ran.append(True)
        with z.Count_me(level="info", name="filtered.count"):
            ran.append(True)
        assert ran == [True, True]  # the body still runs
    assert metrics.events == []


def test_instruments_record_on_methods_and_nested_blocks(new_client, dead_address):
    z = new_client(publish=dead_address)

    class Shop:
        @z.timer("shop.checkout")
        def checkout(self, items):
            return len(items)

        @z.count_me(name="shop.visits")
        async def visit(self):
            return self

    shop = Shop()
    with capture() as metrics:
        assert shop.checkout([1, 2]) == 2
        assert asyncio.run(shop.visit()) is shop
        timer = z.timer("shop.nested")
        with timer, timer:  # the same object may be re-entered
            pass
    assert len(metrics.values("shop.checkout")) == 1
    assert metrics.total("shop.visits") == 1
    outer, inner = sorted(metrics.values("shop.nested"), reverse=True)
    assert outer >= inner >= 0


# -- what users of pystatsd and prometheus_client reach for ------------------------------------
class Draws(random.Random):
    """An injected rng that returns the given draws in turn (then 0.0: always sampled)."""

    def __init__(self, *draws: float) -> None:
        super().__init__(0)
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.0


def test_decr_subtracts_and_never_raises(zibrato_metrics, new_client, dead_address):
    z = new_client(publish=dead_address)
    z.incr("stock", 10)
    z.decr("stock")
    z.decr("stock", 3, tags={"shop": "eu"})
    z.decr("stock", 0.5)
    z.decr("stock", "two")  # not a number: counted, not raised
    assert zibrato_metrics.total("stock") == 5.5
    # In order within each series (the tagged decrement is a series of its own)
    assert zibrato_metrics.values("stock") in ([10, -1, -0.5, -3], [-3, 10, -1, -0.5])
    assert zibrato_metrics.dropped == {"invalid_value": 1}


def test_sampled_counter_records_with_probability_rate_and_carries_it(new_client, dead_address):
    seed = 20251126
    z = new_client(publish=dead_address, rng=random.Random(seed))
    with capture() as metrics:
        for _ in range(2000):
            z.incr("cache.hits", rate=0.1)
        z.incr("cache.misses", 3, rate=1)
        z.incr("cache.evictions", 2, 1)  # the rate by position, as in pystatsd
    expected = random.Random(seed)
    kept = sum(expected.random() < 0.1 for _ in range(2000))
    assert 120 < kept < 280  # the seed's draws, sanity only: the count below is exact
    hits = metrics.filter("cache.hits")
    assert len(hits) == kept
    assert all(event.rate == 0.1 and event.value == 1 for event in hits)
    assert metrics.total("cache.hits") == pytest.approx(10 * kept)  # as a backend counts it
    (misses,) = metrics.filter("cache.misses")
    assert (misses.value, misses.rate) == (3, 1.0)  # rate 1: a plain five-field event
    assert metrics.total("cache.evictions") == 2


def test_sampled_timing_timer_and_counter_objects(new_client, dead_address):
    # draws: below 0.5 records, at or above it does not
    z = new_client(publish=dead_address, rng=Draws(0.1, 0.9, 0.2, 0.7, 0.3, 0.6, 0.4, 0.8))
    with capture() as metrics:
        z.timing("upstream", 0.25, rate=0.5)  # 0.1: kept
        z.timing("upstream", 0.75, rate=0.5)  # 0.9: not
        with z.timer("block", rate=0.5):  # 0.2: kept
            pass

        @z.timer("call", rate=0.5)
        def call():
            return "called"

        assert call() == "called"  # 0.7: not
        assert call() == "called"  # 0.3: kept

        @z.counter("jobs", 2, rate=0.5)
        async def job():
            return "done"

        assert asyncio.run(job()) == "done"  # 0.6: not
        assert asyncio.run(job()) == "done"  # 0.4: kept
        z.observe("sizes", 7, rate=0.5)  # 0.8: not
    assert metrics.values("upstream") == [0.25]
    assert len(metrics.values("block")) == len(metrics.values("call")) == 1
    assert metrics.total("jobs") == 4  # one increment of 2, at rate 0.5
    assert "sizes" not in metrics
    assert {event.rate for event in metrics.events} == {0.5}


@pytest.mark.parametrize("rate", [0, -0.5, 1.5, math.nan, "0.1", [0.1], True])
def test_an_invalid_rate_is_counted_never_raised(new_client, dead_address, rate):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        z.incr("a", rate=rate)
        z.decr("a", rate=rate)
        z.timing("b", 0.1, rate=rate)
        with z.timer("c", rate=rate):
            pass
        with z.counter("d", rate=rate):
            pass
        z.incr("fine")
    assert metrics.dropped == {"invalid_rate": 5}
    assert [event.name for event in metrics.events] == ["fine"]


def test_timer_start_and_stop_return_the_elapsed_seconds(new_client, dead_address):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        timer = z.timer("manual", tags={"step": "one"}).start()
        assert isinstance(timer, Timer)
        time.sleep(0.01)
        elapsed = timer.stop()
        again = timer.start()
        assert again is timer
        second = timer.stop()
    assert elapsed >= 0.005  # slept 10 ms; sleeping never returns early by more than that
    assert metrics.values("manual") == [elapsed, second]
    assert metrics.filter("manual")[0].tags == {"step": "one"}


def test_timer_stop_without_start_returns_zero_and_is_counted(new_client, dead_address, caplog):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        assert z.timer("never.started").stop() == 0.0
        timer = z.timer("twice").start()
        assert timer.stop() >= 0
        assert timer.stop() == 0.0
    assert metrics.dropped == {"timer_not_started": 2}
    assert metrics.values("twice") and "never.started" not in metrics
    assert sum("timer_not_started" in record.getMessage() for record in caplog.records) == 1


def test_timer_stop_at_a_filtered_level_still_measures(new_client, dead_address):
    z = new_client(publish=dead_address, level="error")
    with capture() as metrics:
        timer = z.timer("quiet", level="debug").start()
        time.sleep(0.005)
        assert timer.stop() > 0
        assert z.timer("quiet", level="debug").stop() == 0.0
    assert metrics.events == [] and metrics.dropped == {}


def test_timing_takes_a_timedelta_and_refuses_negative_durations(new_client, dead_address):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        z.timing("upstream", timedelta(milliseconds=250))
        z.timing("upstream", 0)
        z.timing("upstream", -0.001)
        z.timing("upstream", timedelta(seconds=-1))
        z.timing("upstream", timedelta(minutes=2), rate=1)
        z.gauge("not.a.duration", timedelta(seconds=1))  # only timers take a timedelta
    assert metrics.values("upstream") == [0.25, 0, 120.0]
    assert metrics.dropped == {"negative_duration": 2, "invalid_value": 1}


def test_sets_count_distinct_members(new_client, dead_address):
    z = new_client(publish=dead_address)
    with capture() as metrics:
        for member in ("alice", "bob", "alice", 42, "42", "", "bob"):
            z.set("users.active", member, tags={"shop": "eu"})
        z.set("users.active", 1.5)  # floats are not members
        z.set("users.active", "x" * 256)  # too long
        z.set("users.active", None)  # type: ignore[arg-type]
    assert metrics.unique("users.active") == 4  # alice, bob, 42, ""
    assert metrics.values("users.active") == ["alice", "bob", "alice", 42, "42", "", "bob"]
    assert metrics.filter("users.active")[0].type == "set"
    assert metrics.dropped == {"invalid_value": 3}


def test_unsampled_calls_record_bare_values_and_sampled_ones_events(dead_address):
    """Unsampled counters and timers go to their series as bare values (zibrato.series);
    a sampled event carries its rate in a sixth field, in the level's queue."""
    client = Zibrato(publish=dead_address)
    try:
        queue = client.publisher.queues["info"]
        client.incr("plain")
        with client.timer("plain.t"):
            pass
        client.incr("sampled", rate=0.5)  # the module rng: kept or not, never 5 fields
        events = list(queue)
        pending = {s.name: list(s.values) for s in client.publisher.series_book.dirty["info"]}
    finally:
        client.close(linger=0)
    assert pending["plain"] == [1] and len(pending["plain.t"]) == 1
    assert all(len(event) == 6 and event[5] == 0.5 for event in events)
