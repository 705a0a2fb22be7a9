"""The wire format: round trips, typed decode errors with stable reasons, event checks."""

from __future__ import annotations

import logging
import time

import msgpack
import pytest
import zmq

from zibrato import levels, protocol
from zibrato.protocol import MAX_MESSAGE_BYTES, DecodeError, Kind
from zibrato.subscriber import Subscriber

EVENTS = [
    (int(Kind.COUNTER), "orders.placed", 2, None, {"route": "/checkout"}),
    (int(Kind.GAUGE), "queue.depth", 42.5, "worker-3", None),
    (int(Kind.GAUGE_DELTA), "queue.depth", -3, None, None),
    (int(Kind.TIMER), "orders.load", 0.0123, None, None),
    (int(Kind.DISTRIBUTION), "orders.items", 0, None, {"shop": "eu"}),
]


def header(**changes):
    fields = {
        "version": protocol.VERSION,
        "publisher": "abc-123",
        "seq": 7,
        "sent_before": 100,
        "timestamp": 1700000000.5,
        "source": "web-1",
        "tags": {"app": "shop"},
        "events": [list(event) for event in EVENTS],
    }
    fields.update(changes)
    return list(fields.values())


def payload(**changes) -> bytes:
    return msgpack.packb(header(**changes))


@pytest.mark.parametrize("level", levels.LEVELS)
def test_round_trip(level):
    frames = protocol.encode(
        level, "abc-123", 7, 100, 1700000000.5, "web-1", {"app": "shop"}, EVENTS
    )
    assert frames[0] == level.encode()
    assert all(isinstance(frame, bytes) for frame in frames)
    batch = protocol.decode(frames)
    assert batch.level == level
    assert (batch.publisher, batch.seq, batch.sent_before) == ("abc-123", 7, 100)
    assert batch.timestamp == 1700000000.5
    assert (batch.source, batch.tags) == ("web-1", {"app": "shop"})
    assert [tuple(event) for event in batch.events] == EVENTS
    # Integers stay integers and floats stay floats on the way.
    assert [type(event[2]) for event in batch.events] == [int, float, int, float, int]
    assert all(protocol.check_event(event) is None for event in batch.events)


def test_round_trip_without_source_or_tags():
    batch = protocol.decode(protocol.encode("info", "p", 0, 0, 1.0, None, None, []))
    assert (batch.source, batch.tags, tuple(batch.events)) == (None, None, ())


def test_payload_is_plain_msgpack_for_other_languages():
    frames = protocol.encode("crit", "p", 1, 2, 3.0, None, None, EVENTS[:1])
    assert msgpack.unpackb(frames[1]) == [1, "p", 1, 2, 3.0, None, None, [list(EVENTS[0])]]


GOOD = payload()


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"info"], "frames"),
        ([b"info", GOOD, b"extra"], "frames"),
        ([], "frames"),
        ([b"loud", GOOD], "topic"),
        ([b"inf", GOOD], "topic"),
        ([b"infoX", GOOD], "topic"),
        ([b"warn", GOOD], "topic"),  # aliases are not topics
        ([b"info", b"\x00" * (MAX_MESSAGE_BYTES + 1)], "size"),
        ([b"info", b"\xc1"], "msgpack"),
        ([b"info", b"not msgpack at all \xff\xfe"], "msgpack"),
        ([b"info", GOOD[:-3]], "msgpack"),
        ([b"info", GOOD + b"trailing"], "msgpack"),
        ([b"info", msgpack.packb(header(version=2))], "version"),
        ([b"info", msgpack.packb(header(version=0))], "version"),
        ([b"info", msgpack.packb(header(version="1"))], "version"),
        ([b"info", msgpack.packb(42)], "header"),
        ([b"info", msgpack.packb([])], "header"),
        ([b"info", msgpack.packb({"version": 1})], "header"),
        ([b"info", msgpack.packb([1, "p", 0])], "header"),
        ([b"info", msgpack.packb([*header(), "extra"])], "header"),
        ([b"info", payload(publisher=5)], "header"),
        ([b"info", payload(seq=-1)], "header"),
        ([b"info", payload(seq=1.5)], "header"),
        ([b"info", payload(sent_before=True)], "header"),
        ([b"info", payload(timestamp="now")], "header"),
        ([b"info", payload(source=3)], "header"),
        ([b"info", payload(tags={"shard": 3})], "header"),
        ([b"info", payload(tags=["a"])], "header"),
        ([b"info", payload(events={"a": 1})], "header"),
    ],
)
def test_malformed_messages_raise_decode_error_with_stable_reason(frames, reason):
    with pytest.raises(DecodeError) as raised:
        protocol.decode(frames)
    assert raised.value.reason == reason
    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(f"{reason}: ")


def test_too_many_events_in_one_message_is_refused():
    events = [[0, "e", 1, None, None]] * (protocol.MAX_EVENTS_PER_BATCH + 1)
    with pytest.raises(DecodeError) as raised:
        protocol.decode([b"info", payload(events=events)])
    assert raised.value.reason == "msgpack"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ((0, "ok.name", 1, None, None), None),
        ([3, "ok.list", 0.5, "src", {"k": "v"}], None),
        ((0, "n" * protocol.MAX_NAME_LENGTH, 1, None, None), None),
        ((0, "sampled", 1, None, None, 0.25), None),
        ((3, "sampled", 0.5, None, None, 1), None),
        ((5, "set", "member", None, None), None),
        ((5, "set", "", None, None), None),
        ((5, "set", -(2**63), None, None), None),
        ((5, "set", "m" * protocol.MAX_MEMBER_LENGTH, None, None), None),
        ("not an event", "invalid_event"),
        ((0, "short", 1), "invalid_event"),
        ((0, "long", 1, None, None, 0.5, None), "invalid_event"),
        ((0, "rate", 1, None, None, None), "invalid_rate"),
        ((0, "rate", 1, None, None, 0), "invalid_rate"),
        ((0, "rate", 1, None, None, 1.5), "invalid_rate"),
        ((0, "rate", 1, None, None, float("nan")), "invalid_rate"),
        ((0, "rate", 1, None, None, True), "invalid_rate"),
        ((0, "rate", "x", None, None, "0.5"), "invalid_rate"),
        ((5, "set", 1.5, None, None), "invalid_value"),
        ((5, "set", "m" * (protocol.MAX_MEMBER_LENGTH + 1), None, None), "invalid_value"),
        ((5, "set", None, None, None), "invalid_value"),
        ((5, "set", True, None, None), "invalid_value"),
        ((6, "kind", 1, None, None), "invalid_kind"),
        ((0, "no.set", "member", None, None), "invalid_value"),
        ((99, "kind", 1, None, None), "invalid_kind"),
        (("0", "kind", 1, None, None), "invalid_kind"),
        ((True, "kind", 1, None, None), "invalid_kind"),
        ((0, 42, 1, None, None), "invalid_name"),
        ((0, b"bytes", 1, None, None), "invalid_name"),
        ((0, "", 1, None, None), "invalid_name"),
        ((0, "has space", 1, None, None), "invalid_name"),
        ((0, "new\nline", 1, None, None), "invalid_name"),
        ((0, "n" * (protocol.MAX_NAME_LENGTH + 1), 1, None, None), "invalid_name"),
        ((1, "v", float("nan"), None, None), "invalid_value"),
        ((1, "v", float("inf"), None, None), "invalid_value"),
        ((1, "v", float("-inf"), None, None), "invalid_value"),
        ((1, "v", "3", None, None), "invalid_value"),
        ((1, "v", None, None, None), "invalid_value"),
        ((1, "v", True, None, None), "invalid_value"),
        ((0, "s", 1, "", None), "invalid_source"),
        ((0, "s", 1, "a b", None), "invalid_source"),
        ((0, "s", 1, 7, None), "invalid_source"),
        ((0, "t", 1, None, {"k": 1}), "invalid_tags"),
        ((0, "t", 1, None, {"": "v"}), "invalid_tags"),
        ((0, "t", 1, None, {1: "v"}), "invalid_tags"),
        ((0, "t", 1, None, [("k", "v")]), "invalid_tags"),
        ((0, "t", 1, None, {f"k{i}": "v" for i in range(protocol.MAX_TAGS + 1)}), "invalid_tags"),
        ((0, "t", 1, None, {"k": "v" * (protocol.MAX_TAG_LENGTH + 1)}), "invalid_tags"),
    ],
)
def test_check_event_reasons(event, reason):
    assert protocol.check_event(event) == reason


def test_valid_events_counts_rejects_by_reason():
    batch = protocol.decode(
        [b"info", payload(events=[list(EVENTS[0]), [0, "", 1, None, None], [1, "g", "x"]])]
    )
    rejected: dict[str, int] = {}
    assert [tuple(event) for event in protocol.valid_events(batch, rejected)] == [EVENTS[0]]
    assert rejected == {"invalid_name": 1, "invalid_event": 1}


@pytest.fixture
def raw_publisher():
    """A bare PUB socket on a random loopback port, standing in for a broker's backend."""
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:0")
    yield sock
    sock.close(linger=0)


def test_subscriber_counts_garbage_and_keeps_receiving(raw_publisher, caplog):
    caplog.set_level(logging.WARNING, logger="zibrato")
    subscriber = Subscriber(raw_publisher.getsockopt_string(zmq.LAST_ENDPOINT))
    try:

        def valid(name, seq):
            events = [(0, name, 1, None, None)]
            return protocol.encode("info", "pub", seq, seq, time.time(), None, None, events)

        # Slow joiner: keep sending until the subscription is in place.
        deadline = time.monotonic() + 10
        seq = 0
        while (batch := subscriber.receive(timeout=0.05)) is None:
            assert time.monotonic() < deadline, "the subscriber never connected"
            raw_publisher.send_multipart(valid("probe", seq))
            seq += 1

        garbage = [
            [b"info", b"\xc1 garbage"],
            [b"info"],
            [b"infoX", GOOD],
            [b"info", msgpack.packb(header(version=9))],
            [b"info", msgpack.packb(42)],
            [b"info", b"\xc1 more garbage"],
        ]
        for frames in garbage:
            raw_publisher.send_multipart(frames)
        raw_publisher.send_multipart(valid("after.garbage", 10_000))

        received = []
        deadline = time.monotonic() + 10
        while not any(b.events[0][1] == "after.garbage" for b in received):
            assert time.monotonic() < deadline, subscriber.bad_messages
            batch = subscriber.receive(timeout=0.05)  # never raises, whatever arrives
            if batch is not None:
                received.append(batch)
    finally:
        subscriber.close()

    assert subscriber.bad_messages == {
        "msgpack": 2,
        "frames": 1,
        "topic": 1,
        "version": 1,
        "header": 1,
    }
    bad_logs = [r for r in caplog.records if "ignored a bad message" in r.getMessage()]
    assert len(bad_logs) == 5  # once per reason


def test_a_value_list_stands_for_one_event_per_value():
    events = [
        [3, "orders.load", [0.1, 0.2, 0.3], None, {"route": "/a"}],
        [4, "orders.items", [1, 2], "web-2", None, 0.5],  # sampled: each value keeps the rate
        [0, "orders.placed", 1, None, None],
    ]
    batch = protocol.decode([b"info", payload(events=events)])
    assert batch.events == (
        (3, "orders.load", 0.1, None, {"route": "/a"}),
        (3, "orders.load", 0.2, None, {"route": "/a"}),
        (3, "orders.load", 0.3, None, {"route": "/a"}),
        (4, "orders.items", 1, "web-2", None, 0.5),
        (4, "orders.items", 2, "web-2", None, 0.5),
        (0, "orders.placed", 1, None, None),
    )


def test_a_value_list_is_checked_value_by_value():
    events = [[3, "orders.load", [0.1, "slow", None, [0.2], -1e400], None, None]]
    batch = protocol.decode([b"info", payload(events=events)])
    rejected: dict[str, int] = {}
    assert list(protocol.valid_events(batch, rejected)) == [(3, "orders.load", 0.1, None, None)]
    assert rejected == {"invalid_value": 4}


def test_value_lists_may_not_stand_for_more_events_than_a_batch_may_hold():
    events = [[3, "a", [0.1] * 4000, None, None], [3, "b", [0.1] * 97, None, None]]
    with pytest.raises(DecodeError) as raised:
        protocol.decode([b"info", payload(events=events)])
    assert raised.value.reason == "size"
    events[1][2] = [0.1] * 96  # exactly the limit
    assert len(protocol.decode([b"info", payload(events=events)]).events) == 4096
