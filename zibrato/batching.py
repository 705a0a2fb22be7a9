"""What a batch of recorded events becomes on the wire: checked, and grouped into series.

The calling thread appends events unchecked (that is what makes recording cheap); the
publisher thread checks them here, once per batch. Events whose name, source and tags
were seen valid before, with finite numbers for values, pass in a few lookups per series
and per batch; any other event is checked fully, and an invalid one is dropped and counted
by its reason (the ``reject`` callback: ``zibrato.publisher.dropped{reason}``).

On the wire a batch carries each timer's and distribution's values as one event per
series (a value list: kind, name, source and tags once), which :func:`protocol.decode`
expands again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from math import isfinite
from typing import Any

from zibrato import protocol
from zibrato.protocol import DISTRIBUTION, TIMER, Event

# Kinds whose values of one batch travel as one event per series (a value list).
GROUPED_KINDS = frozenset((TIMER, DISTRIBUTION))
# Names and tag sets remembered as valid; past this the memory starts again (bounded even
# when a program makes up names without end).
MAX_REMEMBERED = 10_000
_INF = float("inf")
_NUMBER_TYPES = frozenset((int, float))

Reject = Callable[[str, str], None]


class BatchChecker:
    """Check batches of events and give their wire form; remember what was valid.

    >>> checker = BatchChecker(lambda reason, detail: print(reason))
    >>> events, wire = checker.checked([(0, "hits", 1, None, None), (0, "bad name", 1, None, None)])
    invalid_name
    >>> events
    [(0, 'hits', 1, None, None)]
    """

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        self._valid_names: set[str] = set()
        self._valid_tags: set[tuple[tuple[str, str], ...]] = set()

    def checked(self, events: list[Event]) -> tuple[list[Event], list[Event]]:
        """Return ``events`` without the invalid ones (each counted), and their wire form."""
        wire = self._wire_if_known_valid(events)
        if wire is not None:
            return events, wire
        events = self.drop_invalid(events)
        return events, on_the_wire(events)

    def drop_invalid(self, events: Sequence[Event]) -> list[Event]:
        """Return the valid ``events`` (normalised: any mapping as tags, a timedelta as
        seconds), checking each fully; count and drop the others."""
        good = []
        for event in events:
            tags = event[4]
            if tags is not None and not isinstance(tags, dict) and isinstance(tags, Mapping):
                # any mapping will do; msgpack wants a dict
                event = (*event[:4], dict(tags), *event[5:])
            if type(event[2]) is timedelta and event[0] == TIMER:
                event = (event[0], event[1], event[2].total_seconds(), *event[3:])
            reason = protocol.check_event(event)
            if reason is None and event[0] == TIMER and event[2] < 0:
                reason = "negative_duration"
            if reason is None:
                good.append(event)
                self._remember_valid(event)
            else:
                self.reject(reason, f"{event[1]!r} = {event[2]!r}"[:200])
        return good

    def _wire_if_known_valid(self, events: list[Event]) -> list[Event] | None:
        """Return the wire form of ``events`` if every one is known valid, else None.

        Known valid: its name, source and tags were seen valid before, and its value is a
        finite number (a timer's never negative). Grouped into value lists first, so that
        a timer's or distribution's name and tags are looked up once per series and batch.
        """
        names, tag_sets = self._valid_names, self._valid_tags
        # The same few dict objects are usually passed call after call (a web adapter's
        # cached tags alternate): check each once per batch, which holds them alive.
        checked_tags: set[int] = set()
        try:
            wire = _grouped(events)
            for kind, name, value, source, tags in wire:  # sampled: six fields, checked fully
                if type(value) is list:  # a series' values (in C: map and set)
                    if not _NUMBER_TYPES.issuperset(map(type, value)) or not all(
                        map(isfinite, value)
                    ):
                        return None
                    # Checked here, on this thread, so that timing() costs its caller nothing.
                    if kind == TIMER and min(value) < 0:
                        return None
                elif not ((type(value) is int or type(value) is float) and -_INF < value < _INF):
                    return None
                if name not in names or (source is not None and source not in names):
                    return None
                if tags is not None and id(tags) not in checked_tags:
                    if tuple(tags.items()) not in tag_sets:
                        return None
                    checked_tags.add(id(tags))
        except (TypeError, AttributeError, ValueError, IndexError, KeyError, OverflowError):
            return None  # unhashable, not a mapping, sampled, a huge integer
        return _collapsed(wire)

    def _remember_valid(self, event: Event) -> None:
        if len(self._valid_names) > MAX_REMEMBERED or len(self._valid_tags) > MAX_REMEMBERED:
            self._valid_names.clear()
            self._valid_tags.clear()
        self._valid_names.add(event[1])
        if event[3] is not None:
            self._valid_names.add(event[3])
        if event[4] is not None:
            self._valid_tags.add(tuple(event[4].items()))


def on_the_wire(events: Sequence[Event]) -> list[Event]:
    """Return checked ``events`` with each timer's and distribution's values of the batch in
    one event per series (kind, name, source, tags object), as :func:`protocol.decode`
    expands them again. Other events, and sampled ones, go as they are.
    """
    return _collapsed(_grouped(events))


def _grouped(events: Sequence[Event]) -> list[Event]:
    """Return ``events`` with each timer's and distribution's values in a list per series
    (a list even for one value, so that a value that is itself a list stays an error)."""
    wire: list[Event] = []
    series: dict[tuple[Any, ...], list[Any]] = {}
    for event in events:
        if len(event) == 5:
            kind, name, value, source, tags = event
            if kind in GROUPED_KINDS:
                key = (kind, name, source, id(tags))
                values = series.get(key)
                if values is not None:
                    values.append(value)
                else:
                    series[key] = values = [value]
                    wire.append((kind, name, values, source, tags))
                continue
        wire.append(event)
    return wire


def _collapsed(wire: list[Event]) -> list[Event]:
    """Return ``wire`` with each series of one value sent as a plain event."""
    return [
        (event[0], event[1], event[2][0], event[3], event[4])
        if len(event) == 5 and type(event[2]) is list and len(event[2]) == 1
        else event
        for event in wire
    ]


def expanded(wire: Sequence[Event]) -> Iterator[Event]:
    """Yield the events a wire form stands for: one per value of each value list."""
    for event in wire:
        if type(event[2]) is list:
            kind, name, values, *rest = event
            for value in values:
                yield (kind, name, value, *rest)
        else:
            yield event
