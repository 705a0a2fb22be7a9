"""One batch at a time from a publisher's buffers to its broker link, every event counted.

A :class:`BatchSender` belongs to one publisher in one process (a forked child makes its
own): it numbers the batches of each level (``seq``) and counts the events sent before
each (``sent_before``), so that subscribers count what they missed; it has a batch
checked (:mod:`zibrato.batching`), encoded and handed to the link, or counts why not
(no subscriber for its level, no broker, CURVE refused, ZeroMQ's queue full). The events
it is given are "in hand" (:mod:`zibrato.accounting`): each ends in exactly one count.
Only the one holding the publisher's lock uses it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from math import isfinite
from typing import Any, Protocol

from zibrato import levels, protocol
from zibrato.accounting import DROPPED_METRIC, Counts
from zibrato.batching import BatchChecker, expanded, on_the_wire
from zibrato.link import BrokerLink
from zibrato.protocol import COUNTER, TIMER, Event
from zibrato.series import Series

DROPPED_LEVEL = "warning"
_NUMBER_TYPES = frozenset((int, float))


class CaptureSink(Protocol):
    """Where drained events go instead of the network (``zibrato.testing`` uses this)."""

    def receive(
        self,
        level: str,
        source: str | None,
        tags: Mapping[str, str] | None,
        events: Sequence[Event],
    ) -> None: ...


class BatchSender:
    """Send batches of a publisher's events and series' values through ``link``.

    >>> sender = BatchSender(link, counts, "1f-9c0e", source=None, tags=None)  # doctest: +SKIP
    >>> sender.events("info", [(0, "hits", 1, None, None)], None, deadline)
    """

    def __init__(
        self,
        link: BrokerLink,
        counts: Counts,
        publisher_id: str,
        *,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        self.link = link
        self.counts = counts
        self.publisher_id = publisher_id
        # Read now, with the publisher's thread and locks (see zibrato.publisher.Wake): a
        # gevent that patches time.sleep later must not reach into a real thread.
        self._sleep = time.sleep
        self.source = source
        self.tags = tags
        self.checker = BatchChecker(counts.reject_in_hand)
        self.seq = dict.fromkeys(levels.LEVELS, 0)
        self.sent_before = dict.fromkeys(levels.LEVELS, 0)

    def events(
        self, level: str, events: list[Event], sink: CaptureSink | None, deadline: float
    ) -> None:
        """Send one batch of queued events (in hand), or count why it is not sent."""
        events, wire = self.checker.checked(events)
        if not events:
            return
        if sink is not None:
            sink.receive(level, self.source, self.tags, events)
            self.counts.count_in_hand(captured=len(events))
        elif not self._unsendable(level, len(events)):
            self._send_frames(level, events, deadline, wire)

    def series(
        self,
        level: str,
        taken: list[tuple[Series, list[Any]]],
        sink: CaptureSink | None,
        deadline: float,
    ) -> None:
        """Send the values taken from series (in hand), or count why they are not sent."""
        wire, count = self._series_wire(taken, check_all=False)
        if not wire:
            return
        if sink is not None:
            sink.receive(level, self.source, self.tags, list(expanded(wire)))
            self.counts.count_in_hand(captured=count)
        elif not self._unsendable(level, count):
            try:
                frames = self._encode(level, wire)
            except (OverflowError, TypeError, ValueError):
                # Something the quick check let through (a huge integer, say): check fully.
                wire, count = self._series_wire(taken, check_all=True)
                if not wire:
                    return
                frames = self._encode(level, wire)
            self._send_encoded(level, frames, count, deadline)

    def drop_report(self, deadline: float) -> None:
        """Send the drops not reported yet as ``zibrato.publisher.dropped`` counters, once a
        subscriber listens for them (until then they wait, merged with later ones)."""
        if not self.counts.unpublished or DROPPED_LEVEL not in self.link.subscribed:
            return
        report = self.counts.take_report()
        events: list[Event] = [
            (COUNTER, DROPPED_METRIC, count, None, {"reason": reason})
            for reason, count in report.items()
        ]
        self.events(DROPPED_LEVEL, events, None, deadline)
        self.counts.settle_in_hand()

    def final_marks(self) -> None:
        """Send each level's final count as an empty batch: a subscriber that receives it
        knows exactly how many of this publisher's events it missed, to the last."""
        for level, seq in self.seq.items():
            if seq and level in self.link.subscribed:
                self.link.send(self._encode(level, []), 0)

    def _series_wire(
        self, taken: list[tuple[Series, list[Any]]], *, check_all: bool
    ) -> tuple[list[Event], int]:
        """Return the wire form of values taken from series, and how many values it holds.

        An untrusted series' values are checked (``check_all``: every value, one by one);
        the invalid ones are counted by reason, in hand.
        """
        wire: list[Event] = []
        count = 0
        for series, values in taken:
            if check_all or not series.trusted:
                values = self._checked_values(series, values, one_by_one=check_all)
                if not values:
                    continue
            wire.append(
                (
                    series.kind,
                    series.name,
                    values if len(values) > 1 else values[0],
                    series.source,
                    series.tags,
                )
            )
            count += len(values)
        return wire, count

    def _checked_values(
        self, series: Series, values: list[Any], *, one_by_one: bool = False
    ) -> list[Any]:
        """Return a series' values that are valid; count the others (by reason, in hand)."""
        try:
            if (
                not one_by_one
                and _NUMBER_TYPES.issuperset(map(type, values))
                and all(map(isfinite, values))
                and (series.kind != TIMER or min(values) >= 0)
            ):
                return values
        except (OverflowError, TypeError, ValueError):  # a huge integer, say
            pass
        events = [(series.kind, series.name, value, series.source, series.tags) for value in values]
        return [event[2] for event in self.checker.drop_invalid(events)]

    def _unsendable(self, level: str, count: int) -> bool:
        """Count ``count`` events in hand that cannot go to a subscriber, and say so."""
        link, counts = self.link, self.counts
        if level in link.subscribed:
            return False
        if (refusal := link.refusal()) is not None:
            counts.reject_in_hand(*refusal, count)  # CURVE: the broker turned us down
        elif link.error is not None:
            counts.reject_in_hand("invalid_address", link.error, count)
        elif not link.ever_subscribed and not link.handshakes:
            # No broker has ever answered (the startup hold is over): the events are lost.
            counts.reject_in_hand("no_broker", "", count, warn=False)  # one warning of its own
        else:
            if level in link.ever_subscribed:
                # The broker or its subscribers went away: these events are lost on the
                # way, so advance the count that lets a returning subscriber see the gap.
                self.sent_before[level] += count
            counts.count_in_hand(filtered=count)
        return True

    def _send_frames(
        self,
        level: str,
        events: Sequence[Event],
        deadline: float,
        wire: Sequence[Event] | None = None,
    ) -> None:
        """Send ``events`` (checked) as one batch, in their ``wire`` form (value lists)."""
        try:
            frames = self._encode(level, on_the_wire(events) if wire is None else wire)
        except (OverflowError, TypeError, ValueError):
            # Something the quick check let through (a huge integer, say): check fully.
            kept = self.checker.drop_invalid(events)
            if not kept:
                return
            events, frames = kept, self._encode(level, on_the_wire(kept))
        if len(frames[1]) > protocol.MAX_MESSAGE_BYTES and len(events) > 1:
            half = len(events) // 2
            self._send_frames(level, events[:half], deadline)
            self._send_frames(level, events[half:], deadline)
            return
        self._send_encoded(level, frames, len(events), deadline)

    def _send_encoded(self, level: str, frames: list[bytes], count: int, deadline: float) -> None:
        """Hand one encoded batch of ``count`` events to ZeroMQ, retrying while its queue is
        full until ``deadline``; count it sent, or dropped."""
        while not self.link.send(frames, count):
            if time.monotonic() >= deadline:
                self.counts.reject_in_hand(
                    "send_queue_full", "the ZeroMQ send queue to the broker is full", count
                )
                return
            self._sleep(0.002)
        self.seq[level] += 1
        self.sent_before[level] += count
        self.counts.count_in_hand(sent=count)

    def _encode(self, level: str, events: Sequence[Event]) -> list[bytes]:
        return protocol.encode(
            level,
            self.publisher_id,
            self.seq[level],
            self.sent_before[level],
            time.time(),
            self.source,
            self.tags,
            events,
        )
