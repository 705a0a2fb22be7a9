"""Series' values (zibrato.series): the hand-over between recording threads and the
publisher loses nothing and sends nothing twice, whatever the interleaving."""

from __future__ import annotations

import os
import threading

import pytest

from zibrato import Zibrato, publisher
from zibrato.client import MAX_CLIENT_SERIES
from zibrato.protocol import TIMER
from zibrato.publisher import MAX_SERIES, Publisher
from zibrato.series import Series


class CountingSink:
    """A capture sink that counts every value it receives, by name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def receive(self, level, source, tags, events) -> None:
        with self.lock:
            for _kind, name, value, *_ in events:
                self.totals[name] = self.totals.get(name, 0) + value
                self.counts[name] = self.counts.get(name, 0) + 1


@pytest.fixture
def sink():
    counting = CountingSink()
    publisher.set_capture_sink(counting)
    try:
        yield counting
    finally:
        publisher.set_capture_sink(None)


def test_threads_recording_while_the_publisher_takes_lose_nothing(sink, dead_address):
    """Eight threads append to the same few series while the publisher thread takes them
    every millisecond: every value arrives exactly once."""
    z = Zibrato(publisher=Publisher(dead_address, interval=0.001, buffer_size=1_000_000))
    per_thread = 20_000
    try:

        def record(i: int) -> None:
            timer = z.timer("series.timed")
            for n in range(per_thread):
                z.incr("series.count")
                z.observe("series.size", 1)
                with timer:
                    pass
                if n % 1000 == 0:
                    z.incr("series.tagged", tags={"thread": str(i % 2)})

        threads = [threading.Thread(target=record, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        publisher.flush_all(release_held=True)
    finally:
        z.close(linger=0)
    assert sink.totals["series.count"] == 8 * per_thread
    assert sink.totals["series.size"] == 8 * per_thread
    assert sink.counts["series.timed"] == 8 * per_thread
    assert sink.totals["series.tagged"] == 8 * per_thread // 1000
    assert z.stats()["dropped"] == {}


def test_a_full_series_drops_and_counts_what_does_not_fit(dead_address):
    z = Zibrato(publisher=Publisher(dead_address, interval=3600, buffer_size=10))
    try:
        for _ in range(25):
            z.incr("series.full")
        assert z.publisher.pending_events == 10
        assert z.stats()["dropped"] == {"buffer_full": 15}
    finally:
        z.close(linger=0)


def test_past_the_series_bounds_values_go_as_events(sink, dead_address):
    """A client keeps MAX_CLIENT_SERIES series per kind and level, a publisher MAX_SERIES;
    past either, values are recorded one by one, as events: none is lost."""
    z = Zibrato(publisher=Publisher(dead_address, interval=3600))
    try:
        for n in range(MAX_CLIENT_SERIES + 50):
            z.incr("series.many", tags={"n": str(n)})
        assert len(z.publisher.series_book.all()) == MAX_CLIENT_SERIES
        assert sum(len(queue) for queue in z.publisher.queues.values()) == 50
        for n in range(MAX_SERIES):
            z.publisher.series("info", TIMER, "series.more", tags={"n": str(n)})
        assert len(z.publisher.series_book.all()) == MAX_SERIES
        assert z.publisher.series("info", TIMER, "series.more", tags={"n": "x"}) is None
        publisher.flush_all(release_held=True)
    finally:
        z.close(linger=0)
    assert sink.counts["series.many"] == MAX_CLIENT_SERIES + 50


def test_an_invalid_name_is_never_a_series_and_is_counted(dead_address):
    z = Zibrato(publisher=Publisher(dead_address, interval=3600))
    try:
        z.incr("has space")
        z.timing("bad.timer", -1.0)  # a series, but a negative duration is not sent
        z.flush(timeout=0)
        assert z.publisher.series("info", 0, "has space") is None
    finally:
        z.close(linger=0)
    assert z.stats()["dropped"] == {"invalid_name": 1, "negative_duration": 1}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_empty_series(dead_address):
    z = Zibrato(publisher=Publisher(dead_address, interval=3600))
    try:
        for _ in range(5):
            z.incr("series.parent")
        series = z.publisher.series("info", 0, "series.parent")
        assert isinstance(series, Series) and len(series.values) == 5
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                child_ok = z.publisher.pending_events == 0 and not series.values
                z.incr("series.parent")
                child_ok = child_ok and series.values == [1]
                os.write(write, b"1" if child_ok else b"0")
            finally:
                os._exit(0)
        os.close(write)
        try:
            assert os.read(read, 1) == b"1"
        finally:
            os.close(read)
            os.waitpid(pid, 0)
        assert len(series.values) == 5  # the parent's are still the parent's
    finally:
        z.close(linger=0)
