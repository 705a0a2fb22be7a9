"""Timer and counter objects: one type per kind, transparent decorators, filtered levels."""

from __future__ import annotations

import asyncio
import inspect

from zibrato import Counter, Timer
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
