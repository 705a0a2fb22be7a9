"""``LazyZibrato``: the adapters' one client per process, built on first use."""

from __future__ import annotations

import threading
from typing import Any

from zibrato import Zibrato
from zibrato.framework.lazy import CLIENT_ATTRIBUTES, LazyZibrato
from zibrato.testing import capture


def test_nothing_happens_until_the_first_metric() -> None:
    calls: list[int] = []

    def settings() -> dict[str, Any]:
        calls.append(1)
        return {"source": "web-1", "tags": {"app": "shop"}}

    client = LazyZibrato(settings)
    assert not client.started and calls == []
    assert repr(client) == "<LazyZibrato (not started)>"
    assert isinstance(client, Zibrato)
    with capture() as metrics:
        client.incr("lazy.hits", 2)

        @client.time_me(name="lazy.timer")  # the 2013 API, unchanged
        def work() -> int:
            return 7

        assert work() == 7
    assert calls == [1] and client.started
    (hit,) = metrics.filter("lazy.hits")
    assert (hit.value, hit.source, hit.tags) == (2, "web-1", {"app": "shop"})
    assert len(metrics.values("lazy.timer")) == 1
    client.reset(linger=0)


def test_asking_for_an_attribute_a_client_lacks_starts_nothing() -> None:
    """pytest's fixture collection probes module-level objects for ``_mock_name``: a
    Django test module that imports ``zibrato_django.zibrato`` once started the client
    (its thread and socket) while being collected."""
    client = LazyZibrato(dict)
    for name in ("_mock_name", "__wrapped__", "_settings_cache", "not_a_metric_method"):
        assert getattr(client, name, None) is None
    assert not client.started
    with capture():
        client.incr("lazy.started")
    assert set(client.__dict__) - {"_settings"} == CLIENT_ATTRIBUTES  # every one, no other
    client.reset(linger=0)


def test_many_threads_at_first_use_make_one_client() -> None:
    made: list[int] = []
    client = LazyZibrato(lambda: made.append(1) or {})
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        client.incr("lazy.race")

    with capture() as metrics:
        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert metrics.total("lazy.race") == 8
    assert made == [1]
    client.reset(linger=0)


def test_reset_reads_the_settings_again() -> None:
    source = ["a"]
    client = LazyZibrato(lambda: {"source": source[0]})
    with capture() as metrics:
        client.incr("lazy.reset")
        source[0] = "b"
        client.reset(linger=0)
        assert not client.started
        client.incr("lazy.reset")
    assert [e.source for e in metrics.filter("lazy.reset")] == ["a", "b"]
    client.reset(linger=0)
