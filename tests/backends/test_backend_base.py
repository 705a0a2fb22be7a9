"""The Backend base class on a real in-process broker: timer flushes, a hanging or failing
target, the zibrato.backend.* health series, and level subscription.

Everything is on 127.0.0.1 with ports the OS picks; every wait has a deadline.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgpack
import pytest
import zmq
from backend_support import wait_for_subscriptions, wait_subscribed

from zibrato import Zibrato, protocol
from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import Backend
from zibrato.broker import AddressInUse
from zibrato.runner import Runner
from zibrato.subscriber import Subscriber

WAIT = 5.0
HEALTH = "zibrato.backend."


# -- helpers ---------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class RecordingBackend(Backend):
    """Keeps every rollup it is asked to emit."""

    kind = "recording"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self.rollups: list[Rollup] = []
        self.emitted = threading.Condition()

    def emit(self, rollup: Rollup) -> None:
        with self.emitted:
            self.rollups.append(rollup)
            self.emitted.notify_all()

    def all_series(self, name: str, **tags: str) -> list[Series]:
        return [
            s
            for r in list(self.rollups)
            for s in r.series
            if s.name == name and all(s.tags.get(k) == v for k, v in tags.items())
        ]

    def total(self, name: str, **tags: str) -> float:
        return sum(s.stats["sum"] for s in self.all_series(name, **tags))

    def count(self, name: str) -> float:
        return sum(s.stats["count"] for s in self.all_series(name))

    def names(self) -> set[str]:
        return {s.name for r in list(self.rollups) for s in r.series}

    def wait_total(self, name: str, expected: float, timeout: float = WAIT, **tags: str) -> None:
        wait_until(
            lambda: self.total(name, **tags) >= expected,
            f"{name}{tags} to reach {expected} (now {self.total(name, **tags)})",
            timeout,
        )
        assert self.total(name, **tags) == expected


class HangingBackend(RecordingBackend):
    """Its emit blocks on ``release`` once ``hang_next`` is set (released at teardown)."""

    kind = "hanging"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self.hang_next = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def emit(self, rollup: Rollup) -> None:
        super().emit(rollup)
        if self.hang_next.is_set():
            self.hang_next.clear()
            self.entered.set()
            self.release.wait(30)


class FailingBackend(RecordingBackend):
    """Its first ``failures`` emits raise (after recording what they were given)."""

    kind = "failing"

    def __init__(self, *, failures: int = 2, **common: Any) -> None:
        super().__init__(**common)
        self.failures = failures
        self.calls = 0

    def emit(self, rollup: Rollup) -> None:
        self.calls += 1
        super().emit(rollup)
        if self.calls <= self.failures:
            raise RuntimeError(f"target down (call {self.calls})")


class CountingBackend(RecordingBackend):
    """A target that keeps its own cumulative counts."""

    kind = "counting"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self.counts: dict[str, float] = {"dropped_lines": 0, "reconnects": 0}

    def target_counters(self) -> Mapping[str, float]:
        return dict(self.counts)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def start_backend(inproc_broker: tuple[str, str]) -> Iterator[Callable[..., Any]]:
    """Start a backend on the broker and wait until the broker knows its subscription."""
    started: list[Backend] = []

    def start(cls: type[Backend] = RecordingBackend, **options: Any) -> Any:
        options.setdefault("flush_interval", 0.2)
        backend = cls(connect=inproc_broker[1], **options)
        backend.start()
        started.append(backend)
        wait_subscribed(inproc_broker[0], {backend.level.encode()})
        return backend

    yield start
    for backend in started:
        if isinstance(backend, HangingBackend):
            backend.release.set()
        backend.stop()


@pytest.fixture
def client(inproc_broker: tuple[str, str]) -> Iterator[Zibrato]:
    z = Zibrato(inproc_broker[0])
    yield z
    z.close()


@pytest.fixture
def raw_publisher(inproc_broker: tuple[str, str]) -> Iterator[zmq.Socket[Any]]:
    """A bare XPUB socket on the broker's frontend; usable once it has seen ``info``."""
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(inproc_broker[0])
    yield sock
    sock.close(linger=0)


# -- the flush timer -------------------------------------------------------------------------
def test_flush_timer_fires_without_traffic(start_backend: Callable[..., Any]) -> None:
    started = time.monotonic()
    backend = start_backend(flush_interval=0.2)
    with backend.emitted:
        backend.emitted.wait_for(lambda: len(backend.rollups) >= 3, timeout=1.2)
    elapsed = time.monotonic() - started
    assert len(backend.rollups) >= 3, f"{len(backend.rollups)} flushes in {elapsed:.2f} s"
    for rollup in backend.rollups[:3]:
        assert rollup.series, "every flush carries the health series"
        assert all(s.name.startswith(HEALTH) for s in rollup.series)
        assert 0.05 < rollup.interval < 0.8
    names = {s.name for s in backend.rollups[0].series}
    assert {
        "zibrato.backend.events",
        "zibrato.backend.lost_events",
        "zibrato.backend.target_errors",
        "zibrato.backend.series",
        "zibrato.backend.flush_seconds",
    } <= names
    assert backend.total("zibrato.backend.events") == 0
    assert backend.flushes >= 3


# -- a hanging target ------------------------------------------------------------------------
def test_a_hanging_target_does_not_stop_receiving(
    start_backend: Callable[..., Any], client: Zibrato
) -> None:
    backend: HangingBackend = start_backend(HangingBackend, flush_interval=0.2)
    for _ in range(5):
        client.incr("before")
    client.flush()
    backend.wait_total("before", 5)

    backend.hang_next.set()
    assert backend.entered.wait(WAIT), "emit was never called again"
    emitted_when_stuck = len(backend.rollups)
    received_when_stuck = backend.received_events

    for n in range(100):
        client.incr("during")
        client.timing("during.time", n / 1000)
        if n % 25 == 0:
            client.flush()
    client.flush()
    wait_until(
        lambda: backend.received_events >= received_when_stuck + 200,
        "the receiver to take in the events published while emit hangs",
    )
    assert len(backend.rollups) == emitted_when_stuck, "emit was supposed to be stuck"
    assert not backend.release.is_set()

    backend.release.set()
    backend.wait_total("during", 100)
    wait_until(lambda: backend.count("during.time") >= 100, "the timer values")
    assert backend.count("during.time") == 100
    assert backend.total("zibrato.backend.lost_events") == 0
    assert not backend.all_series("zibrato.backend.bad_messages")


def test_stop_returns_while_emit_hangs(start_backend: Callable[..., Any]) -> None:
    backend: HangingBackend = start_backend(HangingBackend, flush_interval=0.2)
    backend.hang_next.set()
    assert backend.entered.wait(WAIT)
    threads = list(backend._threads)
    started = time.monotonic()
    backend.stop(timeout=1.5)
    assert time.monotonic() - started < 2.0
    backend.release.set()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


# -- health series ---------------------------------------------------------------------------
def test_health_events_counts_received_events(
    start_backend: Callable[..., Any], client: Zibrato
) -> None:
    backend = start_backend()
    for n in range(7):
        client.incr("work", n)
    client.gauge("level", 3, level="error")
    client.flush()
    backend.wait_total("zibrato.backend.events", 8)
    assert backend.total("work") == sum(range(7))
    events = backend.all_series("zibrato.backend.events")
    assert all(
        s.type == SeriesType.COUNTER and dict(s.tags) == {"backend": "recording"} for s in events
    )
    assert all(s.stats["rate"] >= 0 for s in events)
    assert backend.total("zibrato.backend.lost_events") == 0


def test_bad_messages_are_counted_by_reason(
    start_backend: Callable[..., Any], raw_publisher: zmq.Socket[Any], client: Zibrato
) -> None:
    backend = start_backend()
    wait_for_subscriptions(raw_publisher, {b"info"}, WAIT)
    raw_publisher.send_multipart([b"info", b"garbage"])
    raw_publisher.send_multipart([b"info", b"garbage"])
    raw_publisher.send_multipart([b"info", msgpack.packb([99, "p", 0, 0, 0.0, None, None, []])])
    raw_publisher.send_multipart([b"info", b"x", b"y"])
    backend.wait_total("zibrato.backend.bad_messages", 2, reason="msgpack")
    backend.wait_total("zibrato.backend.bad_messages", 1, reason="version")
    backend.wait_total("zibrato.backend.bad_messages", 1, reason="frames")
    # the backend still receives good events afterwards
    client.incr("after.garbage", 3)
    client.flush()
    backend.wait_total("after.garbage", 3)
    assert backend.total("zibrato.backend.events") == 1
    bad = backend.all_series("zibrato.backend.bad_messages")
    assert all(set(s.tags) == {"backend", "reason"} for s in bad)


def test_lost_events_are_counted_from_a_gap_in_sent_before(
    start_backend: Callable[..., Any], raw_publisher: zmq.Socket[Any]
) -> None:
    backend = start_backend()
    wait_for_subscriptions(raw_publisher, {b"info"}, WAIT)
    first = [(0, "gap.hits", 1, None, None), (0, "gap.hits", 1, None, None)]
    raw_publisher.send_multipart(
        protocol.encode("info", "pub-x", 0, 0, time.time(), None, None, first)
    )
    # 2 events sent, then 5 more that never arrived: the next batch says 7 came before it
    second = [(0, "gap.hits", 1, None, None)]
    raw_publisher.send_multipart(
        protocol.encode("info", "pub-x", 1, 7, time.time(), None, None, second)
    )
    backend.wait_total("gap.hits", 3)
    backend.wait_total("zibrato.backend.lost_events", 5)
    assert backend.total("zibrato.backend.events") == 3


def test_target_errors_are_counted_and_receiving_goes_on(
    start_backend: Callable[..., Any], client: Zibrato
) -> None:
    backend: FailingBackend = start_backend(FailingBackend, failures=2)
    client.incr("during.failures")
    client.flush()
    wait_until(lambda: backend.calls >= 3, "a successful emit after two failures")
    client.incr("after.failures", 4)
    client.flush()
    backend.wait_total("after.failures", 4)
    assert backend.target_errors == 2
    backend.wait_total("zibrato.backend.target_errors", 2)
    assert backend.total("during.failures") == 1  # it was in a rollup (maybe a failed one)


def test_target_counters_are_published_as_deltas() -> None:
    backend = CountingBackend(connect="tcp://127.0.0.1:1", flush_interval=10)
    backend.counts["dropped_lines"] = 7
    first = backend.flush()
    backend.counts["dropped_lines"] = 10
    backend.counts["reconnects"] = 1
    second = backend.flush()
    third = backend.flush()

    def value(rollup: Rollup, name: str) -> float:
        found = [s for s in rollup.series if s.name == f"zibrato.backend.{name}"]
        assert len(found) == 1, found
        assert found[0].type == SeriesType.COUNTER
        assert dict(found[0].tags) == {"backend": "counting"}
        return found[0].stats["sum"]

    assert value(first, "dropped_lines") == 7
    assert value(first, "reconnects") == 0
    assert value(second, "dropped_lines") == 3
    assert value(second, "reconnects") == 1
    assert value(third, "dropped_lines") == 0


def test_health_reports_bad_events_dropped_series_and_sampling() -> None:
    backend = RecordingBackend(
        connect="tcp://127.0.0.1:1", flush_interval=10, max_series=2, max_values=3
    )
    backend.aggregator.add_events(
        [
            (0, "a", 1, None, None),
            (0, "b", math.nan, None, None),
            (0, "c", 1, None, None),
            (0, "d", 1, None, None),
            (3, "c", 1.0, None, None),
            (0, "a", 1, None, None),
        ]
    )
    backend.aggregator.add_events([(0, "a", 1, None, None)])
    rollup = backend.flush()
    health = {
        (s.name, s.tags.get("reason", "")): s.stats.get("sum", s.stats.get("value"))
        for s in rollup.series
        if s.name.startswith(HEALTH)
    }
    assert health[("zibrato.backend.bad_events", "invalid_value")] == 1
    assert health[("zibrato.backend.dropped_series", "")] == 2
    assert health[("zibrato.backend.series", "")] == 2
    gauges = [s for s in rollup.series if s.name == "zibrato.backend.series"]
    assert gauges[0].type == SeriesType.GAUGE
    # these only appear when non-zero, and are reset after each flush
    again = backend.flush()
    assert not [s for s in again.series if s.name == "zibrato.backend.dropped_series"]
    assert not [s for s in again.series if s.name == "zibrato.backend.bad_events"]


def test_health_reports_sampled_values() -> None:
    backend = RecordingBackend(connect="tcp://127.0.0.1:1", flush_interval=10, max_values=3)
    backend.aggregator.add_events([(3, "t", n / 10, None, None) for n in range(10)])
    rollup = backend.flush()
    sampled = [s for s in rollup.series if s.name == "zibrato.backend.sampled_values"]
    assert [s.stats["sum"] for s in sampled] == [7]
    timer = [s for s in rollup.series if s.name == "t"]
    assert timer[0].stats["count"] == 10


# -- level subscription ----------------------------------------------------------------------
def test_level_error_receives_error_and_crit_only(
    inproc_broker: tuple[str, str], start_backend: Callable[..., Any], client: Zibrato
) -> None:
    # A debug subscriber makes the publisher actually send info and warning events, so the
    # backend's own subscription is what keeps them out.
    frontend, backend_address = inproc_broker
    everything = Subscriber(backend_address, level="debug")
    try:
        backend = start_backend(level="error")
        wait_subscribed(frontend, {b"debug", b"info", b"warning", b"error", b"crit"})
        for level in ("debug", "info", "warning", "error", "crit"):
            client.incr(f"lvl.{level}", level=level)
        client.incr("lvl.alias", level="critical")
        client.flush()
        seen: set[str] = set()
        deadline = time.monotonic() + WAIT
        while len(seen) < 6 and time.monotonic() < deadline:
            got = everything.receive(0.05)
            if got is not None:
                seen.update(e[1] for e in got.events)
        assert len(seen) == 6, seen
        backend.wait_total("lvl.error", 1)
        backend.wait_total("lvl.crit", 1)
        backend.wait_total("lvl.alias", 1)
        flushes = len(backend.rollups)
        wait_until(lambda: len(backend.rollups) >= flushes + 2, "two more flushes")
        names = backend.names()
        assert not {"lvl.debug", "lvl.info", "lvl.warning"} & names
        assert backend.total("zibrato.backend.events") == 3
    finally:
        everything.close()


def test_backend_rejects_a_non_positive_flush_interval_and_bad_level() -> None:
    with pytest.raises(ValueError):
        RecordingBackend(connect="tcp://127.0.0.1:1", flush_interval=0)
    with pytest.raises(ValueError):
        RecordingBackend(connect="tcp://127.0.0.1:1", level="loud")


# -- the runner: broker and backends in one process -------------------------------------------
def test_runner_connects_backends_to_its_broker_and_flushes_at_stop() -> None:
    fast = RecordingBackend(connect="tcp://127.0.0.1:1", flush_interval=0.2)
    final = RecordingBackend(connect="tcp://127.0.0.1:1", flush_interval=30)
    runner = Runner(
        [fast, final], frontend="tcp://127.0.0.1:0", backend_address="tcp://127.0.0.1:0"
    )
    frontend, backend_address = runner.start()
    try:
        assert fast.connect == final.connect == backend_address
        assert not backend_address.endswith(":0")
        wait_subscribed(frontend, {b"debug"})
        z = Zibrato(frontend)
        try:
            z.incr("runner.hits", 3)
            z.flush()
        finally:
            z.close()
        fast.wait_total("runner.hits", 3)
        wait_until(lambda: final.received_events >= 1, "the slow backend to receive")
        assert final.rollups == []
    finally:
        runner.stop()
    assert final.total("runner.hits") == 3  # written by the final flush


def test_runner_stop_is_bounded_when_a_target_hangs() -> None:
    hanging = HangingBackend(connect="tcp://127.0.0.1:1", flush_interval=0.1)
    healthy = RecordingBackend(connect="tcp://127.0.0.1:1", flush_interval=30)
    runner = Runner(
        [hanging, healthy], frontend="tcp://127.0.0.1:0", backend_address="tcp://127.0.0.1:0"
    )
    hanging.hang_next.set()
    runner.start()
    try:
        assert hanging.entered.wait(WAIT)
        threads = list(hanging._threads)
        started = time.monotonic()
        runner.stop(timeout=1.0)
        assert time.monotonic() - started < 2.0
        assert len(healthy.rollups) == 1, "the healthy backend still made its final flush"
    finally:
        hanging.release.set()
        runner.stop()
    for thread in threads:
        thread.join(WAIT)


def test_runner_that_cannot_bind_releases_what_it_bound() -> None:
    # The backend address is taken: start() fails, and must not keep the frontend bound.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            frontend = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
        failed = Runner(
            [], frontend=frontend, backend_address=f"tcp://127.0.0.1:{holder.getsockname()[1]}"
        )
        retry = Runner([], frontend=frontend, backend_address="tcp://127.0.0.1:0")
        try:
            with pytest.raises(AddressInUse):
                failed.start()
            retry.start()  # the same frontend, once the failed attempt is over
        finally:
            retry.stop()
            for sock in failed.broker._sockets:  # keep a leak from failing later tests
                sock.close(linger=0)
            for sock in retry.broker._sockets:
                sock.close(linger=0)
