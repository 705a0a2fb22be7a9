"""Where the framework kit records a value: the series of its (cached) tags, else events.

The kit's recorders (:mod:`zibrato.framework.units`, :mod:`zibrato.framework.time_spent`,
:mod:`zibrato.framework.task_units`) record bare values into series
(:mod:`zibrato.series`): :func:`recording` finds the series of one metric and tags object,
and :class:`SeriesCache` remembers it per tags object. When the publisher makes no series
(too many series, or tags a batch may not carry), values go out as events instead
(:class:`EventWriter`), where the publisher counts what is invalid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zibrato import levels
from zibrato.client import Zibrato
from zibrato.instruments import LevelBuffer, append_event
from zibrato.series import Series

# Tag objects whose series a recorder or a SeriesCache remembers (the TagCache's are bounded
# too); past this, a series is found by its tags' content (slower, same result).
MAX_CACHED_SERIES = 10_000


class SeriesCache:
    """One metric's series (``zibrato.series``) per tags object, for one publisher.

    The tag dictionaries of the framework kit are made once per combination and kept
    (``TagCache``): a series found by the object's identity costs one lookup, where
    finding it by the tags' content would hash them on every request.

    >>> cache = SeriesCache(client, "debug", TIMER, "db.operation")  # doctest: +SKIP
    >>> cache.add(tags, 0.002)
    """

    __slots__ = ("_by_id", "client", "kind", "level", "name")

    def __init__(self, client: Zibrato, level: str, kind: int, name: str) -> None:
        self.client = client
        self.level = levels.normalize(level)
        self.kind = kind
        self.name = name
        self._by_id: dict[int, tuple[Mapping[str, str] | None, Series | EventWriter]] = {}

    def add(self, tags: Mapping[str, str] | None, value: float) -> None:
        """Record ``value`` into the series of ``tags``."""
        found = self._by_id.get(id(tags))
        if found is not None and found[0] is tags:
            found[1].add(value)
        else:
            self.get(tags).add(value)

    def get(self, tags: Mapping[str, str] | None) -> Series | EventWriter:
        """Return where to record values with ``tags``: their series, or events."""
        found = self._by_id.get(id(tags))
        if found is not None and found[0] is tags:
            return found[1]
        series = recording(self.client, self.level, self.kind, self.name, tags)
        if len(self._by_id) < MAX_CACHED_SERIES:
            self._by_id[id(tags)] = (tags, series)  # holds ``tags``: its id stays its own
        return series


class EventWriter:
    """Record values of one series as events (what :func:`recording` gives when the
    publisher makes no series): the slower path, which the publisher checks."""

    __slots__ = ("kind", "name", "sink", "tags")

    def __init__(
        self, sink: LevelBuffer, kind: int, name: str, tags: Mapping[str, str] | None
    ) -> None:
        self.sink = sink
        self.kind = kind
        self.name = name
        self.tags = tags

    def add(self, value: Any) -> None:
        append_event(self.sink, (self.kind, self.name, value, None, self.tags))


def recording(
    client: Zibrato, level: str, kind: int, name: str, tags: Mapping[str, str] | None
) -> Series | EventWriter:
    """Return where the kit records values of one series at an enabled ``level``."""
    series = client.publisher.series(level, kind, name, tags=tags, trusted=True)
    if series is not None:
        return series
    sink = client._sink(level)
    assert sink is not None  # the kit asks only for levels the client records
    return EventWriter(sink, kind, name, tags)


def enabled(client: Zibrato, level: str) -> str | None:
    """Return ``level``'s canonical name if ``client`` records it, else None."""
    return levels.normalize(level) if client._sink(level) is not None else None
