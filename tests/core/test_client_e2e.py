"""Every spelling of the client API arrives through a real broker subprocess, intact."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import msgpack
import pytest
import zmq

from zibrato import Zibrato
from zibrato.client import PUBLISH_ENV
from zibrato.publisher import Publisher


def test_2013_snippets_verbatim(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend)
    ran = []

    # The 2013 article's snippets, character for character.
    # fmt: off
    @z.time_me(level = 'debug', name = 'myfunct_timer', source = 'myprog')
    def myfunct():
        ran.append("myfunct")

    with z.Time_me(level = 'debug', name = 'timer_name'):
        ran.append("timed block")

    @z.count_me(level = 'info', name = 'myfunct_counter', value = 5)
    def myfunctc():
        pass

    with z.Count_me(level = 'info', name = 'counter_name', source = 'deathstar'):
        pass

    z.gauge(level = 'crit', name = 'gauge_name', value=123)
    # fmt: on

    myfunct()
    myfunctc()
    myfunctc()
    z.flush()
    collector.wait_names("myfunct_timer", "timer_name", "myfunct_counter", "gauge_name")
    collector.wait_for(lambda got: len(collector.named("myfunct_counter")) == 2, "two counts")
    collector.wait_names("counter_name")

    assert ran == ["timed block", "myfunct"]
    timer = collector.one("myfunct_timer")
    assert (timer.type, timer.level, timer.source) == ("timer", "debug", "myprog")
    assert 0 <= timer.value < 5
    block = collector.one("timer_name")
    assert (block.type, block.level, block.source) == ("timer", "debug", None)
    counts = collector.named("myfunct_counter")
    assert [(c.type, c.level, c.value) for c in counts] == [("counter", "info", 5)] * 2
    counter = collector.one("counter_name")
    assert (counter.type, counter.level, counter.value, counter.source) == (
        "counter",
        "info",
        1,
        "deathstar",
    )
    gauge = collector.one("gauge_name")
    assert (gauge.type, gauge.level, gauge.value, gauge.delta) == ("gauge", "crit", 123, False)


def test_modern_calls_arrive_with_kind_value_level_source_and_tags(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend, source="web-1", tags={"app": "shop", "region": "eu"})

    @z.timer("orders.load", tags={"shop": "eu"})
    def load_orders():
        time.sleep(0.01)
        return "orders"

    assert load_orders() == "orders"
    with z.timer("orders.block", level="warning", source="batch-7"):
        time.sleep(0.01)
    z.incr("orders.placed")
    z.incr("orders.placed", 2, tags={"region": "us", "route": "/checkout"})
    z.timing("orders.upstream", 0.0123, level="error")
    z.observe("orders.items", 7, level="debug")
    z.gauge("queue.depth", 42)
    z.gauge("queue.depth", -3, delta=True)
    z.flush()
    names = ("orders.load", "orders.block", "orders.upstream", "orders.items", "queue.depth")
    collector.wait_names(*names)
    collector.wait_for(lambda got: len(collector.named("orders.placed")) == 2, "two increments")
    collector.wait_for(lambda got: len(collector.named("queue.depth")) == 2, "two gauges")

    load = collector.one("orders.load")
    assert (load.type, load.level, load.source) == ("timer", "info", "web-1")
    assert load.tags == {"app": "shop", "region": "eu", "shop": "eu"}
    assert 0.01 <= load.value < 5  # seconds, not milliseconds

    block = collector.one("orders.block")
    assert (block.type, block.level, block.source) == ("timer", "warning", "batch-7")
    assert block.tags == {"app": "shop", "region": "eu"}
    assert 0.01 <= block.value < 5

    placed = collector.named("orders.placed")
    assert [(e.type, e.level, e.value, e.source) for e in placed] == [
        ("counter", "info", 1, "web-1"),
        ("counter", "info", 2, "web-1"),
    ]
    assert placed[0].tags == {"app": "shop", "region": "eu"}
    # Per-call tags are merged over the client's defaults; the call wins on conflicts.
    assert placed[1].tags == {"app": "shop", "region": "us", "route": "/checkout"}

    upstream = collector.one("orders.upstream")
    assert (upstream.type, upstream.level, upstream.value) == ("timer", "error", 0.0123)
    items = collector.one("orders.items")
    assert (items.type, items.level, items.value) == ("distribution", "debug", 7)

    gauges = collector.named("queue.depth")
    assert [(g.type, g.value, g.delta) for g in gauges] == [
        ("gauge", 42, False),
        ("gauge", -3, True),
    ]
    assert all(abs(event.timestamp - time.time()) < 60 for event in collector.received)


def test_async_timer_decorator_and_context_manager(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend)

    @z.timer("async.decorated", tags={"kind": "coroutine"})
    async def fetch(delay):
        await asyncio.sleep(delay)
        return delay

    async def main():
        async with z.timer("async.block", level="error"):
            await asyncio.sleep(0.01)
        return await fetch(0.01)

    assert asyncio.run(main()) == 0.01
    z.flush()
    collector.wait_names("async.decorated", "async.block")
    decorated = collector.one("async.decorated")
    assert (decorated.type, decorated.level, decorated.tags) == (
        "timer",
        "info",
        {"kind": "coroutine"},
    )
    assert 0.01 <= decorated.value < 5  # the awaited time, not just coroutine creation
    block = collector.one("async.block")
    assert (block.type, block.level) == ("timer", "error")
    assert 0.01 <= block.value < 5


def test_counter_decorator_and_context_manager_modern_spelling(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend)

    @z.counter("jobs.run", 5, tags={"queue": "high"})
    def run_job(x):
        return x * 2

    @z.counter("jobs.async")
    async def run_async():
        return "done"

    assert run_job(21) == 42
    assert asyncio.run(run_async()) == "done"
    with z.counter("jobs.block", level="crit"):
        pass
    z.flush()
    collector.wait_names("jobs.run", "jobs.async", "jobs.block")
    run = collector.one("jobs.run")
    assert (run.type, run.value, run.tags) == ("counter", 5, {"queue": "high"})
    assert collector.one("jobs.async").value == 1
    block = collector.one("jobs.block")
    assert (block.type, block.level, block.value) == ("counter", "crit", 1)


def test_zero_values_stay_zero(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend)
    z.incr("zero.count", 0)
    z.gauge("zero.gauge", 0)
    z.gauge("zero.delta", 0, delta=True)
    z.timing("zero.timing", 0.0)
    z.observe("zero.observe", 0)
    z.flush()
    names = ("zero.count", "zero.gauge", "zero.delta", "zero.timing", "zero.observe")
    collector.wait_names(*names)
    for name in names:
        assert collector.one(name).value == 0, name
    assert collector.one("zero.count").type == "counter"
    assert collector.one("zero.timing").type == "timer"


class Boom(Exception):
    pass


def test_timer_records_when_the_body_raises_and_reraises_unchanged(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend)
    errors = {name: Boom(name) for name in ("decorated", "block", "async_decorated", "async_block")}

    @z.timer("raise.decorated")
    def decorated():
        time.sleep(0.01)
        raise errors["decorated"]

    @z.time_me(name="raise.async_decorated")
    async def async_decorated():
        await asyncio.sleep(0.01)
        raise errors["async_decorated"]

    async def async_block():
        async with z.Time_me(name="raise.async_block"):
            await asyncio.sleep(0.01)
            raise errors["async_block"]

    with pytest.raises(Boom) as raised:
        decorated()
    assert raised.value is errors["decorated"]
    assert raised.type is Boom

    with pytest.raises(Boom) as raised, z.timer("raise.block"):
        time.sleep(0.01)
        raise errors["block"]
    assert raised.value is errors["block"]

    with pytest.raises(Boom) as raised:
        asyncio.run(async_decorated())
    assert raised.value is errors["async_decorated"]

    with pytest.raises(Boom) as raised:
        asyncio.run(async_block())
    assert raised.value is errors["async_block"]

    # KeyboardInterrupt and friends pass through too, and are timed.
    with pytest.raises(KeyboardInterrupt), z.timer("raise.interrupt"):
        raise KeyboardInterrupt

    z.flush()
    names = [f"raise.{name}" for name in errors] + ["raise.interrupt"]
    collector.wait_names(*names)
    for name in names:
        event = collector.one(name)
        assert event.type == "timer"
        assert 0 <= event.value < 5
    for name in errors:
        assert collector.one(f"raise.{name}").value >= 0.01


def test_2013_constructor_keywords_host_and_port(broker, subscribe, new_client):
    collector = subscribe()
    host, port = broker.frontend.removeprefix("tcp://").rsplit(":", 1)
    z = new_client(host=host, port=int(port))
    assert z.publisher.address == broker.frontend
    z.incr("via.host_port")
    z.flush()
    assert collector.wait_names("via.host_port")


def test_publish_address_from_environment(broker, subscribe, new_client, monkeypatch):
    collector = subscribe()
    monkeypatch.setenv(PUBLISH_ENV, broker.frontend)
    z = new_client()
    assert z.publisher.address == broker.frontend
    z.incr("via.env")
    z.flush()
    assert collector.wait_names("via.env")


def test_publish_argument_wins_over_environment(
    broker, subscribe, new_client, monkeypatch, dead_address
):
    collector = subscribe()
    monkeypatch.setenv(PUBLISH_ENV, dead_address)
    z = new_client(publish=broker.frontend)
    by_keyword = new_client(host="127.0.0.1", port=int(broker.frontend.rsplit(":", 1)[1]))
    assert z.publisher.address == broker.frontend
    assert by_keyword.publisher.address == broker.frontend
    z.incr("argument.wins")
    by_keyword.incr("keywords.win")
    z.flush()
    by_keyword.flush()
    assert collector.wait_names("argument.wins", "keywords.win")


def test_client_as_context_manager_sends_on_exit(broker, subscribe):
    collector = subscribe()
    with Zibrato(publish=broker.frontend) as z:
        z.incr("closed.on.exit", 3)
    assert collector.wait_names("closed.on.exit")
    assert collector.total("closed.on.exit") == 3


def test_a_batchs_timer_values_travel_once_per_series_and_every_value_arrives(
    broker, subscribe, new_client
):
    collector = subscribe()
    raw = zmq.Context.instance().socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"info")
    raw.connect(broker.backend)
    try:
        # One batch, sent by flush(): the publisher's own timer never fires in between.
        z = new_client(publisher=Publisher(broker.frontend, interval=60))
        fast, slow = {"route": "/a"}, {"route": "/b"}  # the same objects, call after call
        for i in range(300):
            z.timing("req", 0.001 * i, level="info", tags=fast if i % 3 else slow)
            z.observe("rows", i % 7, level="info", tags=fast)
            z.incr("hits", level="info")
        z.timing("req", 0.5, level="info", tags={"route": "/a"})  # equal tags: the same series
        z.flush(timeout=5)
        received = collector.wait_for(lambda got: len(got) >= 901, "every value")
        poller = zmq.Poller()
        poller.register(raw, zmq.POLLIN)
        wire = []
        while sum(len(event[2]) if type(event[2]) is list else 1 for event in wire) < 901:
            assert poller.poll(5000), "the raw subscriber saw not every batch"
            wire += msgpack.unpackb(raw.recv_multipart()[1])[7]
    finally:
        raw.close(linger=0)
    assert len(received) == 901 and not collector.invalid
    timings = sorted(event.value for event in received if event.name == "req")
    assert timings == sorted([0.001 * i for i in range(300)] + [0.5])
    by_route = Counter(event.tags["route"] for event in received if event.name == "req")
    assert by_route == {"/a": 201, "/b": 100}
    assert sum(event.value for event in received if event.name == "rows") == sum(
        i % 7 for i in range(300)
    )
    # On the wire: one event per series, with its values in a list.
    shapes = Counter((event[1], type(event[2]).__name__) for event in wire)
    assert shapes == {("req", "list"): 2, ("rows", "list"): 1, ("hits", "list"): 1}
    stats = z.stats()
    assert stats["sent_events"] == 901 and not stats["dropped"]
    assert collector.subscriber.losses.lost_events == 0  # loss accounting counts values


def test_a_value_that_is_itself_a_list_is_refused_not_sent_as_a_value_list(
    broker, subscribe, new_client
):
    collector = subscribe()
    z = new_client(publish=broker.frontend)
    z.timing("req", 0.1)
    z.timing("req", [1, 2])  # type: ignore[arg-type]
    z.observe("rows", (3, 4))  # type: ignore[arg-type]
    z.observe("rows", [5])  # type: ignore[arg-type]
    z.timing("req", 0.2)
    z.flush(timeout=5)
    collector.wait_for(
        lambda got: any(event.name == "zibrato.publisher.dropped" for event in got), "the drops"
    )
    measured = [event for event in collector.received if event.name in ("req", "rows")]
    assert sorted(event.value for event in measured) == [0.1, 0.2]
    assert z.stats()["dropped"] == {"invalid_value": 3}
