"""The wire format: one ZeroMQ message carries a batch of events of one level.

A message has two frames::

    frame 0  topic    the level name in ASCII: b"debug" | b"info" | b"warning" | b"error" | b"crit"
    frame 1  payload  a msgpack array:
                      [version, publisher, seq, sent_before, timestamp, source, tags, events]

``events`` is an array of ``[kind, name, value, source, tags]``, or of
``[kind, name, value, source, tags, rate]`` for an event the client sampled (recorded with
probability ``rate``, so it stands for ``1 / rate`` events). A value may be an array of
values: the event then stands for one event per value (a publisher sends a timer's values
of one batch that way, its name and tags once), and :func:`decode` expands it. See
docs/protocol.md for the full specification. Decoding never evaluates anything it
receives: it is msgpack with size limits, and every malformed message raises
:class:`DecodeError` with a stable ``reason`` that subscribers count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Any

import msgpack

from zibrato import levels

VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20
MAX_EVENTS_PER_BATCH = 4096
MAX_NAME_LENGTH = 255
MAX_TAGS = 32
MAX_TAG_LENGTH = 255
MAX_PUBLISHER_LENGTH = 64
MAX_MEMBER_LENGTH = 255

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_TOPIC_LEVELS = {level.encode("ascii"): level for level in levels.LEVELS}
_HEADER_FIELDS = 8


# What an event measures: the integer that travels on the wire. Plain ints, named once
# here, because recording compares and stores them on every call; ``Kind`` names them.
COUNTER = 0
GAUGE = 1
GAUGE_DELTA = 2  # a gauge moved by a value rather than set to it
TIMER = 3
DISTRIBUTION = 4
SET = 5


class Kind(IntEnum):
    """What an event measures (the same integers as the module's constants)."""

    COUNTER = COUNTER
    GAUGE = GAUGE
    GAUGE_DELTA = GAUGE_DELTA
    TIMER = TIMER
    DISTRIBUTION = DISTRIBUTION
    SET = SET


KIND_NAMES: dict[int, str] = {
    Kind.COUNTER: "counter",
    Kind.GAUGE: "gauge",
    Kind.GAUGE_DELTA: "gauge",
    Kind.TIMER: "timer",
    Kind.DISTRIBUTION: "distribution",
    Kind.SET: "set",
}

# (kind, name, value, source or None, tags mapping or None[, rate]); timers carry seconds,
# a set's value is one member (a str or an int); a sixth field is the client's sample rate.
Event = tuple[Any, ...]


class DecodeError(ValueError):
    """A message that is not a valid Zibrato batch; ``reason`` is stable for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Batch:
    """One decoded message: an envelope and its events, as sent (not yet validated)."""

    level: str
    publisher: str
    seq: int
    sent_before: int
    timestamp: float
    source: str | None
    tags: Mapping[str, str] | None
    events: Sequence[Sequence[Any]]
    # How many events the batch stands for: a value list's values each count (-1: one per
    # element of ``events``, as after decode(frames), which expands value lists).
    count: int = -1

    def __post_init__(self) -> None:
        if self.count < 0:
            object.__setattr__(self, "count", len(self.events))


def encode(
    level: str,
    publisher: str,
    seq: int,
    sent_before: int,
    timestamp: float,
    source: str | None,
    tags: Mapping[str, str] | None,
    events: Sequence[Event],
) -> list[bytes]:
    """Return the frames of one batch message.

    ``sent_before`` is how many events this publisher sent on this level before this
    batch; with ``seq`` it lets a subscriber count exactly how many events it missed.
    """
    payload = msgpack.packb([VERSION, publisher, seq, sent_before, timestamp, source, tags, events])
    return [_TOPIC_FRAMES[level], payload]


_TOPIC_FRAMES = {level: level.encode("ascii") for level in levels.LEVELS}


def decode(frames: Sequence[bytes], *, expand: bool = True) -> Batch:
    """Decode one message into a :class:`Batch`, or raise :class:`DecodeError`.

    ``expand=False`` keeps value lists as they came (an event's value a tuple of values:
    ``Batch.count`` says how many events they stand for), for a consumer that folds a
    series' values in at once (the backends' aggregation).
    """
    if len(frames) != 2:
        raise DecodeError("frames", f"expected 2 frames, got {len(frames)}")
    topic, payload = frames
    level = _TOPIC_LEVELS.get(bytes(topic))
    if level is None:
        raise DecodeError("topic", f"unknown topic {bytes(topic)[:32]!r}")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise DecodeError("size", f"payload of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        body = msgpack.unpackb(
            payload,
            use_list=False,
            max_array_len=MAX_EVENTS_PER_BATCH,
            max_map_len=MAX_TAGS,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise DecodeError("msgpack", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(body, tuple) or not body:
        raise DecodeError("header", "payload is not a msgpack array")
    if body[0] != VERSION:
        raise DecodeError(
            "version", f"protocol version {body[0]!r} is not supported (this side speaks {VERSION})"
        )
    if len(body) != _HEADER_FIELDS:
        raise DecodeError("header", f"expected {_HEADER_FIELDS} header fields, got {len(body)}")
    _, publisher, seq, sent_before, timestamp, source, tags, events = body
    if not (
        isinstance(publisher, str)
        and 0 < len(publisher) <= MAX_PUBLISHER_LENGTH
        and _is_count(seq)
        and _is_count(sent_before)
        and type(timestamp) in (int, float)
        and math.isfinite(timestamp)
        and (source is None or check_name(source) is None)
        and (tags is None or valid_tags(tags))
        and isinstance(events, tuple)
    ):
        raise DecodeError("header", "malformed batch header")
    count = len(events)
    if _has_value_lists(events):
        if expand:
            events = _expanded(events)
            count = len(events)
        else:
            count = _value_count(events)
    return Batch(level, publisher, seq, sent_before, float(timestamp), source, tags, events, count)


_third = itemgetter(2)


def _has_value_lists(events: tuple[Any, ...]) -> bool:
    """Whether some event's value is an array (a value list), checked in C for the usual case."""
    try:
        return tuple in set(map(type, map(_third, events)))
    except (TypeError, IndexError, KeyError):  # a malformed event: look event by event
        return any(
            type(event) is tuple and len(event) > 2 and type(event[2]) is tuple for event in events
        )


def _expanded(events: tuple[Any, ...]) -> tuple[Any, ...]:
    """Return ``events`` with each value list turned into one event per value.

    An event ``[kind, name, [v1, v2, ...], source, tags(, rate)]`` stands for the events
    ``[kind, name, v1, source, tags(, rate)]``, ``[kind, name, v2, ...]``...: a publisher
    sends a series' values of one batch in one event, so that its name and tags travel
    (and are checked) once. Each value is then validated as its own event. The batch may
    not stand for more than ``MAX_EVENTS_PER_BATCH`` events in all.
    """
    out: list[Any] = []
    for event in events:
        if type(event) is tuple and 5 <= len(event) <= 6 and type(event[2]) is tuple:
            kind, name, values, *rest = event
            out.extend([(kind, name, value, *rest) for value in values])
            if len(out) > MAX_EVENTS_PER_BATCH:
                break
        else:
            out.append(event)
    if len(out) > MAX_EVENTS_PER_BATCH:
        raise DecodeError(
            "size", f"the batch's value lists hold more than {MAX_EVENTS_PER_BATCH} events"
        )
    return tuple(out)


def _value_count(events: tuple[Any, ...]) -> int:
    """Return how many events ``events`` stand for (value lists counted by their values);
    raise :class:`DecodeError` past ``MAX_EVENTS_PER_BATCH``, as expanding them would."""
    count = 0
    for event in events:
        if type(event) is tuple and 5 <= len(event) <= 6 and type(event[2]) is tuple:
            count += len(event[2])
        else:
            count += 1
    if count > MAX_EVENTS_PER_BATCH:
        raise DecodeError(
            "size", f"the batch's value lists hold more than {MAX_EVENTS_PER_BATCH} events"
        )
    return count


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def valid_tags(tags: object) -> bool:
    """Return whether ``tags`` is a mapping of short non-empty string keys to strings."""
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        return False
    for key, value in tags.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            return False
        if not key or len(key) > MAX_TAG_LENGTH or len(value) > MAX_TAG_LENGTH:
            return False
    return True


def check_name(name: object) -> str | None:
    """Return why ``name`` is not a valid metric name, or None when it is."""
    if not isinstance(name, str):
        return "invalid_name"
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable() or " " in name:
        return "invalid_name"
    return None


def check_rate(rate: object) -> bool:
    """Return whether ``rate`` is a valid sample rate: a number in (0, 1]."""
    return (type(rate) is float or type(rate) is int) and 0 < rate <= 1


def check_member(member: object) -> bool:
    """Return whether ``member`` may be a set member: a short str or a 64-bit int."""
    if type(member) is str:
        return len(member) <= MAX_MEMBER_LENGTH
    return type(member) is int and _INT_MIN <= member <= _INT_MAX


def check_event(event: object) -> str | None:
    """Return the reason ``event`` is invalid, or None when it is a well-formed event.

    Checks run in the order the backends' aggregation applies them (shape, rate, value,
    name, tags, source, kind), so one bad event gets one reason everywhere.
    """
    if not isinstance(event, tuple | list) or not 5 <= len(event) <= 6:
        return "invalid_event"
    if len(event) == 6 and not check_rate(event[5]):
        return "invalid_rate"
    kind, name, value, source, tags = event[:5]
    if type(kind) is int and kind == Kind.SET:
        if not check_member(value):
            return "invalid_value"
    elif type(value) is float:
        if not math.isfinite(value):
            return "invalid_value"
    elif type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        return "invalid_value"  # msgpack integers are 64-bit
    if check_name(name):
        return "invalid_name"
    if tags is not None and not valid_tags(tags):
        return "invalid_tags"
    if source is not None and check_name(source):
        return "invalid_source"
    if type(kind) is not int or kind not in KIND_NAMES:
        return "invalid_kind"
    return None


def valid_events(batch: Batch, rejected: dict[str, int]) -> Iterator[Event]:
    """Yield the well-formed events of ``batch``; count the others by reason in ``rejected``."""
    for event in batch.events:
        reason = check_event(event)
        if reason is None:
            yield event  # type: ignore[misc]
        else:
            rejected[reason] = rejected.get(reason, 0) + 1


def merged_tags(
    batch_tags: Mapping[str, str] | None, event_tags: Mapping[str, str] | None
) -> dict[str, str]:
    """Return the tags of one event: the publisher's, overridden by the event's own."""
    merged = dict(batch_tags) if batch_tags else {}
    if event_tags:
        merged.update(event_tags)
    return merged
