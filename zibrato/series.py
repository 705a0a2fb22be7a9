"""A series' values on their way to the publisher thread: the cheapest way to record.

Most recording is the same few series again and again: a web request's timers under its
route's cached tags, a counter without tags incremented in a loop. For those, the
publisher keeps one :class:`Series` per (level, kind, name, source, tags): the calling
thread appends the bare value to the series' list, and the publisher thread takes the
whole list at once and sends it as one value list. Nothing is built per event (no tuple),
and the publisher's work is per series and batch, not per event; a value costs it a few
dozen instructions to encode. Events of other shapes (sampled, gauges, sets, tags made
anew on each call) go through the per-level queues of tuples instead.

The hand-over needs no lock, only the GIL's atomic list operations:

* the recording thread appends, then marks the series dirty (appends it to its level's
  ``dirty`` deque) when its list has just become non-empty: ``append`` then ``len == 1``;
* the publisher takes ``values[:n]`` and then deletes ``values[:len(taken)]``: appends only
  ever land at the end, so it deletes exactly what it took; if values remain (more than it
  took, or appended meanwhile) it marks the series dirty again itself.

Every interleaving leaves each value either taken or in a list that is marked dirty; a
series may be marked twice, which costs an empty look. A series' list is bounded
(``cap``): past ``soft_cap`` the recording thread wakes the publisher, past ``cap`` the value
is dropped and counted (``buffer_full``); how many series a publisher keeps is bounded too
(beyond it, recording falls back to the queues).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any


class Series:
    """The values of one series waiting to be sent, and where to say it has some.

    >>> series = publisher.series("info", TIMER, "orders.load")   # doctest: +SKIP
    >>> series.add(0.012)

    ``trusted``: the values are known to be finite numbers (a timer's never negative), as
    the framework kit's are, so the publisher does not check them.
    """

    __slots__ = (
        "cap",
        "dirty",
        "kind",
        "name",
        "overflow",
        "soft_cap",
        "source",
        "tags",
        "trusted",
        "values",
    )

    def __init__(
        self,
        kind: int,
        name: str,
        source: str | None,
        tags: Mapping[str, str] | None,
        *,
        dirty: deque[Series],
        soft_cap: int,
        cap: int,
        overflow: Callable[[Series, Any], None],
        trusted: bool = False,
    ) -> None:
        self.kind = kind
        self.name = name
        self.source = source
        self.tags = tags
        self.values: list[Any] = []
        self.dirty = dirty
        self.soft_cap = soft_cap
        self.cap = cap
        self.overflow = overflow
        self.trusted = trusted

    def __repr__(self) -> str:
        return f"<Series {self.name!r} {len(self.values)} pending>"

    def add(self, value: Any) -> None:
        """Record one value (the hot paths write these lines out rather than call this)."""
        values = self.values
        if len(values) < self.soft_cap:
            values.append(value)
            if len(values) == 1:
                self.dirty.append(self)
        else:
            self.overflow(self, value)

    def take(self, most: int) -> list[Any]:
        """Remove and return up to ``most`` of the oldest values (the publisher's side).

        Only one thread takes at a time (the one holding the publisher's lock).
        """
        values = self.values
        taken = values[:most]
        if taken:
            del values[: len(taken)]  # appends land at the end: exactly what was taken
        if values:
            self.dirty.append(self)  # more than we took, or appended meanwhile
        return taken


class SeriesBook:
    """One publisher's series: made on request, found again by key, taken in batches.

    ``series()`` returns the same :class:`Series` for the same level, kind, name, source
    and tags (by content), or None when there are ``max_series`` already or the kind keeps
    its order across series (gauges: a set and a delta of one gauge must stay in order),
    so that the caller records through the queues instead.
    """

    def __init__(
        self,
        levels: tuple[str, ...],
        *,
        soft_cap: int,
        cap: int,
        overflow: Callable[[Series, Any], None],
        kinds: frozenset[int],
        max_series: int,
    ) -> None:
        self.dirty: dict[str, deque[Series]] = {level: deque() for level in levels}
        self.soft_cap = soft_cap
        self.cap = cap
        self.overflow = overflow
        self.kinds = kinds
        self.max_series = max_series
        self._by_key: dict[tuple[Any, ...], Series] = {}

    def series(
        self,
        level: str,
        kind: int,
        name: str,
        *,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        trusted: bool = False,
    ) -> Series | None:
        """Return the series of these (already checked) fields, made on first use."""
        if kind not in self.kinds:
            return None
        key = (level, kind, name, source, None if tags is None else tuple(tags.items()))
        found = self._by_key.get(key)
        if found is not None or len(self._by_key) >= self.max_series:
            return found
        made = Series(
            kind,
            name,
            source,
            None if tags is None else dict(tags),  # a copy: the caller's may change
            dirty=self.dirty[level],
            soft_cap=self.soft_cap,
            cap=self.cap,
            overflow=self.overflow,
            trusted=trusted,
        )
        return self._by_key.setdefault(key, made)  # two threads at once: one series

    def take(self, level: str, most: int) -> tuple[list[tuple[Series, list[Any]]], int]:
        """Take up to ``most`` values of ``level``'s dirty series: [(series, values)], count."""
        dirty = self.dirty[level]
        taken: list[tuple[Series, list[Any]]] = []
        count = 0
        while dirty and count < most:
            series = dirty.popleft()
            values = series.take(most - count)
            if values:
                taken.append((series, values))
                count += len(values)
        return taken, count

    def all(self) -> list[Series]:
        """Every series made so far."""
        return list(self._by_key.values())

    def has_pending(self) -> bool:
        return any(self.dirty.values())

    def discard(self) -> int:
        """Empty every series (one atomic slice deletion each); return how many values."""
        discarded = 0
        for series in self.all():
            values = series.values
            held = len(values)
            del values[:held]
            discarded += held
        for dirty in self.dirty.values():
            dirty.clear()
        return discarded

    def renew_after_fork(self) -> None:
        """In a forked child: the parent's pending values are the parent's to send."""
        self.discard()
