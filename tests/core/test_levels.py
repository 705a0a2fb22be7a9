"""Levels: the client threshold, aliases, and in-process filtering of unsubscribed levels."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from zibrato import levels, protocol


def test_level_names_and_aliases():
    assert levels.LEVELS == ("debug", "info", "warning", "error", "crit")
    for name in levels.LEVELS:
        for other in levels.LEVELS:
            # ZeroMQ subscriptions are prefixes: one level must never match another.
            assert name == other or not other.startswith(name)
    assert levels.normalize("warn") == "warning"
    assert levels.normalize("critical") == "crit"
    assert levels.normalize("ERROR") == "error"
    with pytest.raises(ValueError, match="loud"):
        levels.normalize("loud")


def test_client_threshold_drops_lower_levels_without_buffering(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend, level="warning")
    z.incr("below.info")
    z.incr("below.info.explicit", level="info")
    z.gauge("below.debug", 1, level="debug")
    with z.timer("below.timer", level="info"):
        pass
    # Never even buffered: nothing is waiting to be sent.
    assert not any(z.publisher.queues.values())

    z.incr("at.warning", level="warning")
    z.incr("at.warn", level="warn")
    z.incr("at.error", level="ERROR")
    z.gauge("at.crit", 5, level="crit")
    z.gauge("at.critical", 6, level="critical")
    z.flush()
    collector.wait_names("at.warning", "at.warn", "at.error", "at.crit", "at.critical")
    collector.settle()

    assert {e.name: e.level for e in collector.received} == {
        "at.warning": "warning",
        "at.warn": "warning",
        "at.error": "error",
        "at.crit": "crit",
        "at.critical": "crit",
    }
    stats = z.stats()
    assert stats["filtered_events"] == 0  # below the threshold is not even counted as filtered
    assert stats["dropped"] == {}
    assert stats["sent_events"] == 5


def test_default_event_level_is_info(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend)
    z.incr("default.level")
    with z.timer("default.timer"):
        pass
    z.flush()
    collector.wait_names("default.level", "default.timer")
    assert {e.level for e in collector.received} == {"info"}


class FakeBroker:
    """A bare XSUB, serviced on its own thread, that subscribes to one topic only.

    A ZeroMQ socket only handles new connections while its owner calls into it, so the
    socket lives on a thread that keeps polling it, like a real broker does.
    """

    def __init__(self, subscription: bytes) -> None:
        self.subscription = subscription
        self.messages: list[list[bytes]] = []
        self.address = ""
        self._bound = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._bound.wait(5), "the fake broker did not bind"

    def _run(self) -> None:
        xsub = zmq.Context.instance().socket(zmq.XSUB)
        xsub.setsockopt(zmq.LINGER, 0)
        try:
            xsub.bind("tcp://127.0.0.1:0")
            self.address = xsub.getsockopt_string(zmq.LAST_ENDPOINT)
            xsub.send(b"\x01" + self.subscription)  # repeated to every peer that connects
            self._bound.set()
            while not self._stop.is_set():
                if xsub.poll(20):
                    self.messages.append(xsub.recv_multipart())
        finally:
            xsub.close(linger=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()


@pytest.fixture
def fake_broker():
    broker = FakeBroker(b"info")
    yield broker
    broker.stop()


def test_level_nobody_subscribes_to_is_never_sent(fake_broker, new_client):
    """The fake broker subscribes to info only: no debug batch may ever cross the wire."""
    z = new_client(publish=fake_broker.address)
    for i in range(10):
        z.incr("wire.debug", i, level="debug")
    for i in range(3):
        z.incr("wire.info", i)
    z.flush()
    for i in range(10):
        z.gauge("wire.debug.later", i, level="debug")
    z.incr("wire.info", 3)
    z.flush()

    deadline = time.monotonic() + 10
    while len(fake_broker.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # and keep listening a while: nothing else may arrive
    fake_broker.stop()

    messages = fake_broker.messages
    assert [frames[0] for frames in messages] == [b"info", b"info"]
    batches = [protocol.decode(frames) for frames in messages]
    events = [event for batch in batches for event in batch.events]
    assert [(event[1], event[2]) for event in events] == [("wire.info", i) for i in range(4)]
    stats = z.stats()
    assert stats["filtered_events"] == 20
    assert stats["sent_events"] == 4
    assert stats["dropped"] == {}


def test_subscriber_level_filters_through_the_broker(broker, subscribe, new_client):
    collector = subscribe("error")
    z = new_client(publish=broker.frontend)
    for level in levels.LEVELS:
        z.incr(f"level.{level}", level=level)
    z.flush()
    collector.wait_names("level.error", "level.crit")
    collector.settle()
    assert sorted(e.name for e in collector.received) == ["level.crit", "level.error"]
    # Nobody subscribed below error, so those events stayed inside the client.
    assert z.stats()["filtered_events"] == 3
    assert z.stats()["sent_events"] == 2
