"""R6 and R7: what a peer sends cannot kill a backend, and every reject is counted.

Malformed messages come from a raw ZeroMQ socket through a real broker subprocess to a
real backend (its receiving and flushing threads); the hypothesis test drives arbitrary
msgpack through decode -> aggregate -> summarize -> every built-in backend's emit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from reliability_support import broker_process, report, scaled

from zibrato.aggregation import Rollup
from zibrato.backends.base import Backend

VALID_PER_BATCH = 3  # r6.valid counters; and two r6.huge timers of 1e308 s each


class Capture(Backend):
    """A real backend whose target is a list of rollups."""

    kind = "capture"

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self.rollups: list[Rollup] = []

    def emit(self, rollup: Rollup) -> None:
        self.rollups.append(rollup)

    def total(self, name: str, stat: str, **tags: str) -> float:
        return sum(
            series.stats[stat]
            for rollup in self.rollups
            for series in rollup.series
            if series.name == name and all(series.tags.get(k) == v for k, v in tags.items())
        )

    def reasons(self, name: str) -> dict[str, float]:
        counts: dict[str, float] = {}
        for rollup in self.rollups:
            for series in rollup.series:
                if series.name == name and series.stats["sum"]:
                    reason = series.tags["reason"]
                    counts[reason] = counts.get(reason, 0) + series.stats["sum"]
        return counts


class RawPublisher:
    """An XPUB socket on the broker's frontend that sends whatever it is given."""

    def __init__(self, frontend: str) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.connect(frontend)
        self.streams: dict[str, list[int]] = {}  # publisher id -> [seq, sent_before]

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.poll(100) and self.socket.recv()[:1] == b"\x01":
                return
        raise AssertionError("the backend's subscription never reached us")

    def send(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def batch(self, publisher: str, events: list[Any], topic: bytes = b"info") -> list[bytes]:
        """A well-formed envelope around ``events``, continuing ``publisher``'s counts."""
        seq, sent_before = self.streams.setdefault(publisher, [0, 0])
        self.streams[publisher] = [seq + 1, sent_before + len(events)]
        payload = [1, publisher, seq, sent_before, time.time(), None, None, events]
        return [topic, msgpack.packb(payload)]

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


def _header(**changes: Any) -> bytes:
    fields = {"version": 1, "publisher": "bad", "seq": 0, "sent_before": 0}
    fields |= {"timestamp": 1.0, "source": None, "tags": None, "events": []}
    fields |= changes
    return msgpack.packb(list(fields.values()))


# (frames, reason) for whole messages; the backend counts them in bad_messages.
BAD_MESSAGES: list[tuple[list[bytes], str]] = [
    ([b"info"], "frames"),
    ([b"info", b"", b""], "frames"),
    ([b"infox", _header()], "topic"),
    ([b"info", b"\xc1"], "msgpack"),
    ([b"info", _header() + b"trailing"], "msgpack"),
    ([b"info", msgpack.packb(list(range(5000)))], "msgpack"),
    ([b"info", _header(tags={str(i): "v" for i in range(33)})], "msgpack"),
    ([b"info", msgpack.packb({"a": 1})], "header"),
    ([b"info", msgpack.packb([])], "header"),
    ([b"info", _header(version=2)], "version"),
    ([b"info", msgpack.packb([1, "p", 0, 0, 1.0, None, None])], "header"),
    ([b"info", _header(publisher="p" * 65)], "header"),
    ([b"info", _header(publisher="x" * 200_000)], "header"),
    ([b"info", _header(seq=-1)], "header"),
    ([b"info", _header(sent_before=1.5)], "header"),
    ([b"info", _header(timestamp=math.nan)], "header"),
    ([b"info", _header(source=7)], "header"),
    ([b"info", _header(events={"not": "an array"})], "header"),
]

# (event, reason) for events inside a valid envelope; counted in bad_events.
BAD_EVENTS: list[tuple[Any, str]] = [
    ([0.0, "r6.n", 1, None, None], "invalid_kind"),
    ([True, "r6.n", 1, None, None], "invalid_kind"),
    ([9, "r6.n", 1, None, None], "invalid_kind"),
    ([0, {"a": 1}, 1, None, None], "invalid_name"),
    ([0, ["a"], 1, None, None], "invalid_name"),
    ([0, "", 1, None, None], "invalid_name"),
    ([0, "r6.n", math.nan, None, None], "invalid_value"),
    ([0, "r6.n", math.inf, None, None], "invalid_value"),
    ([0, "r6.n", "1", None, None], "invalid_value"),
    ([0, "r6.n", True, None, None], "invalid_value"),
    ([0, "r6.n", 1, None, {"a": {"b": 1}}], "invalid_tags"),
    ([0, "r6.n", 1, None, {"a": [1]}], "invalid_tags"),
    ([0, "r6.n", 1, None, ["a"]], "invalid_tags"),
    ([0, "r6.n", 1, ["s"], None], "invalid_source"),
    ([0, "r6.n", 1], "invalid_event"),
    ("not an event", "invalid_event"),
]


@pytest.fixture
def capture() -> Iterator[Capture]:
    backend = Capture(flush_interval=0.5)
    yield backend
    backend.stop()


def test_r6_a_flood_of_malformed_messages_among_valid_ones(capture):
    """R6: nothing dies, every valid event is counted exactly, every reject by reason."""
    malformed = scaled(100_000, 1_000_000)
    with broker_process() as broker:
        capture.connect = broker.backend
        capture.start()
        raw = RawPublisher(broker.frontend)
        try:
            raw.wait_subscribed()
            expected_messages: dict[str, int] = {}
            expected_events: dict[str, int] = {}
            valid_batches = bad = messages = 0
            started = time.monotonic()
            while bad < malformed:
                for frames, reason in BAD_MESSAGES:
                    raw.send(frames)
                    expected_messages[reason] = expected_messages.get(reason, 0) + 1
                events = [event for event, _ in BAD_EVENTS]
                raw.send(raw.batch("r6-bad-events", events))
                for _, reason in BAD_EVENTS:
                    expected_events[reason] = expected_events.get(reason, 0) + 1
                valid = [[0, "r6.valid", 1, None, {"k": "v"}]] * VALID_PER_BATCH
                valid += [[3, "r6.huge", 1e308, None, None]] * 2
                raw.send(raw.batch("r6-valid", valid))
                valid_batches += 1
                bad += len(BAD_MESSAGES)
                messages += len(BAD_MESSAGES) + 2
                if valid_batches % 20 == 0:  # do not outrun the backend: no loss to HWM
                    _wait_taken_in(capture, messages)
            _wait_taken_in(capture, messages)
            seconds = time.monotonic() - started
        finally:
            raw.close()
        assert capture.healthy()
        capture.stop()
    assert capture.failure is None and capture.internal_errors == {}
    assert capture.total("r6.valid", "sum", k="v") == valid_batches * VALID_PER_BATCH
    assert capture.total("r6.huge", "count") == valid_batches * 2
    assert capture.reasons("zibrato.backend.bad_messages") == expected_messages
    assert capture.reasons("zibrato.backend.bad_events") == expected_events
    assert capture.total("zibrato.backend.lost_events", "sum") == 0
    report(
        f"R6 {bad} malformed messages and {sum(expected_events.values())} bad events (in "
        f"{valid_batches} more batches) among {valid_batches} valid batches, {seconds:.1f} s: "
        f"valid events 100 % counted, rejects by reason exact, backend healthy"
    )


def _wait_taken_in(backend: Capture, messages: int, timeout: float = 30.0) -> None:
    """Wait until the backend's subscriber has taken in ``messages`` (good or bad)."""
    sub = backend._subscriber
    assert sub is not None
    deadline = time.monotonic() + timeout
    while sub.batches + sum(sub.bad_messages.values()) < messages:
        assert time.monotonic() < deadline, f"taken in {sub.batches} + {sub.bad_messages}"
        time.sleep(0.01)


def test_r7_oversize_messages_are_cut_off_and_the_others_go_through(capture):
    """R7: past ZMQ_MAXMSGSIZE the broker drops the sender's connection; past 1 MiB the
    backend rejects the message (``size``); a well-behaved client is unaffected."""
    from zibrato import Zibrato

    oversize = scaled(5, 50)
    with broker_process() as broker:
        capture.connect = broker.backend
        capture.start()
        raw = RawPublisher(broker.frontend)
        client = Zibrato(publish=broker.frontend)
        stop = threading.Event()
        recorded = [0]

        def record() -> None:
            while not stop.is_set():
                client.incr("r7.valid")
                recorded[0] += 1
                time.sleep(0.0005)

        recorder = threading.Thread(target=record)
        try:
            raw.wait_subscribed()
            recorder.start()
            for _ in range(oversize):
                raw.send([b"info", b"\x00" * (3 << 20)])  # 3 MiB: the broker hangs up
                raw.send([b"info", _header(source="s" * ((1 << 20) + 100))])  # just past 1 MiB
                time.sleep(0.05)
            stop.set()
            recorder.join(10)
            client.close()
            _wait_counter(capture, "r7.valid", recorded[0])
        finally:
            stop.set()
            raw.close()
            client.close()
        capture.stop()
    assert capture.total("r7.valid", "sum") == recorded[0]
    bad = capture.reasons("zibrato.backend.bad_messages")
    assert 1 <= bad.get("size", 0) <= oversize, bad  # some may go down with a hung-up peer
    assert set(bad) <= {"size"}, bad
    report(
        f"R7 {oversize} x 3 MiB and {oversize} x (1 MiB + 100 B) messages: {recorded[0]} valid "
        f"events all arrived; {bad.get('size', 0)} rejected as size"
    )


def _wait_counter(backend: Capture, name: str, total: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while backend.total(name, "sum") < total:
        assert time.monotonic() < deadline, f"{name}: {backend.total(name, 'sum')} of {total}"
        time.sleep(0.05)


def test_a_flood_of_distinct_publisher_ids_costs_bounded_memory(capture):
    """Item 4: a distinct 1 MB publisher id per batch grew a backend by 1 MB a batch; now
    an id is at most 64 characters, and at most 10 000 (id, level) pairs are remembered."""
    publishers = scaled(20_000, 200_000)
    with broker_process() as broker:
        capture.connect = broker.backend
        capture.start()
        raw = RawPublisher(broker.frontend)
        try:
            raw.wait_subscribed()
            for i in range(publishers):
                raw.send(raw.batch(f"{i:064d}", [[0, "ids.valid", 1, None, None]]))
                if i % 2000 == 1999:
                    _wait_taken_in(capture, i + 1)
            raw.send([b"info", _header(publisher="x" * 1_000_000)])  # 1 MB: a header reject
            _wait_taken_in(capture, publishers + 1)
            remembered = len(capture._subscriber.losses._expected)  # type: ignore[union-attr]
        finally:
            raw.close()
        capture.stop()
    assert capture.total("ids.valid", "sum") == publishers
    assert remembered <= 10_000
    report(f"{publishers} distinct publisher ids: {remembered} remembered, all events counted")
