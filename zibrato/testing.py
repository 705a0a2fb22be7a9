"""Assert on the metrics your code records, with no broker.

As a context manager::

    from zibrato.testing import capture

    def test_checkout():
        with capture() as metrics:
            checkout()
        assert metrics.total("orders.placed") == 1
        assert metrics.values("orders.load")            # the recorded durations, in seconds

or with the pytest fixture that this module registers (``zibrato_metrics``)::

    def test_checkout(zibrato_metrics):
        checkout()
        assert zibrato_metrics.total("orders.placed") == 1

While a capture is active every ``Zibrato`` client in the process records into it instead
of the network. Events that a client refuses (bad names, NaN, unknown levels) are not
captured; they are counted by reason in ``metrics.dropped`` instead.

Reading a name that was never recorded raises :class:`MetricNotRecorded` (listing the
names that were), and reading one as the wrong type (``total()`` of a gauge) raises
:class:`WrongMetricType`: a typo fails loudly instead of comparing with 0 or None.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from zibrato import protocol, publisher
from zibrato.protocol import Event

__all__ = [
    "CapturedMetrics",
    "MetricNotRecorded",
    "RecordedEvent",
    "WrongMetricType",
    "capture",
    "zibrato_metrics",
]

_REPR_SERIES = 8  # how many names a repr shows before "... and N more"


class MetricNotRecorded(AssertionError):
    """A name was read from a capture, but no event of that name was recorded."""


class WrongMetricType(AssertionError):
    """A name was read as one type (``total()``: a counter) but recorded as others."""


@dataclass(frozen=True)
class RecordedEvent:
    """One event as a backend would see it: tags merged, source resolved.

    ``value`` is a number, or a set's member (a str or an int). ``rate`` is the sample
    rate the event was recorded with (1.0 when it was not sampled).
    """

    type: str
    name: str
    value: Any
    level: str
    source: str | None
    tags: dict[str, str] = field(default_factory=dict)
    delta: bool = False
    rate: float = 1.0


class CapturedMetrics:
    """The events recorded while a capture is active, with helpers to query them."""

    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._lock = threading.Lock()
        # Drop counts when the capture began, per publisher, so only later ones count.
        self._dropped_before = {id(pub): dict(pub.dropped) for pub in publisher.live_publishers()}

    def receive(
        self,
        level: str,
        source: str | None,
        tags: Mapping[str, str] | None,
        events: Sequence[Event],
    ) -> None:
        recorded = [
            RecordedEvent(
                type=protocol.KIND_NAMES[event[0]],
                name=event[1],
                value=event[2],
                level=level,
                source=event[3] or source,
                tags=protocol.merged_tags(tags, event[4]),
                delta=event[0] == protocol.GAUGE_DELTA,
                rate=event[5] if len(event) > 5 else 1.0,
            )
            for event in events
        ]
        with self._lock:
            self._events.extend(recorded)

    @property
    def events(self) -> list[RecordedEvent]:
        """Every event recorded so far (pending events are flushed first)."""
        publisher.flush_all()
        with self._lock:
            return list(self._events)

    def names(self) -> dict[str, list[str]]:
        """Return every name recorded so far, each with the types it was recorded as."""
        return _names(self.events)

    def __contains__(self, name: object) -> bool:
        return any(event.name == name for event in self.events)

    def filter(
        self, name: str, *, type: str | None = None, tags: Mapping[str, str] | None = None
    ) -> list[RecordedEvent]:
        """Return the events called ``name`` (of ``type``, carrying ``tags``, when given).

        Unlike the readers below, this never raises: nothing recorded is an empty list.
        """
        return [
            event
            for event in self.events
            if event.name == name
            and (type is None or event.type == type)
            and (not tags or all(event.tags.get(k) == v for k, v in tags.items()))
        ]

    def values(self, name: str, *, tags: Mapping[str, str] | None = None) -> list[Any]:
        """Return the recorded values of ``name``, in order (durations in seconds)."""
        return [event.value for event in self._read(name, None, tags)]

    def total(self, name: str, *, tags: Mapping[str, str] | None = None) -> float:
        """Return the sum of the counter ``name``, as a backend counts it (sampled
        increments count ``1 / rate`` times)."""
        total: float = sum(event.value / event.rate for event in self._read(name, "counter", tags))
        return total

    def gauge(self, name: str, *, tags: Mapping[str, str] | None = None) -> float | None:
        """Return the current value of the gauge ``name`` (deltas applied).

        None when the gauge was recorded, but never with ``tags``.
        """
        current: float | None = None
        for event in self._read(name, "gauge", tags):
            current = (current or 0) + event.value if event.delta else event.value
        return current

    def unique(self, name: str, *, tags: Mapping[str, str] | None = None) -> int:
        """Return how many distinct members the set ``name`` received (42 and "42" are one)."""
        return len({str(event.value) for event in self._read(name, "set", tags)})

    def _read(
        self, name: str, type: str | None, tags: Mapping[str, str] | None
    ) -> list[RecordedEvent]:
        """Return the events of ``name`` (of ``type``, with ``tags``); raise if the name was
        never recorded, or never as ``type``."""
        events = self.events
        named = [event for event in events if event.name == name]
        if not named:
            recorded = ", ".join(sorted(_names(events))[:50]) or "nothing"
            raise MetricNotRecorded(f"no metric {name!r} was recorded; recorded: {recorded}")
        if type is not None and all(event.type != type for event in named):
            kinds = "/".join(sorted({event.type for event in named}))
            raise WrongMetricType(
                f"{name!r} was recorded as {kinds}, not {type}; read it with "
                f"{_READER[named[0].type]}"
            )
        return [
            event
            for event in named
            if (type is None or event.type == type)
            and (not tags or all(event.tags.get(k) == v for k, v in tags.items()))
        ]

    @property
    def dropped(self) -> dict[str, int]:
        """Events that clients refused while capturing (bad values, names, levels...)."""
        publisher.flush_all()
        return self._dropped_counts()

    def clear(self) -> None:
        """Forget everything captured so far."""
        publisher.flush_all()
        with self._lock:
            self._events.clear()

    def __repr__(self) -> str:
        # What has been captured so far, without flushing: a repr has no side effects.
        with self._lock:
            events = list(self._events)
        names = _names(events)
        shown = [f"{name} ({'/'.join(kinds)})" for name, kinds in sorted(names.items())]
        if len(shown) > _REPR_SERIES:
            shown[_REPR_SERIES:] = [f"... and {len(shown) - _REPR_SERIES} more"]
        drops = self._dropped_counts()
        dropped = f", dropped {drops}" if drops else ""
        return f"<CapturedMetrics {len(events)} event(s): {', '.join(shown) or 'none'}{dropped}>"

    def _dropped_counts(self) -> dict[str, int]:
        """Return :attr:`dropped` as counted so far, without flushing pending events."""
        counts: dict[str, int] = {}
        for pub in publisher.live_publishers():
            before = self._dropped_before.get(id(pub), {})
            for reason, total in pub.dropped.items():
                if total - before.get(reason, 0):
                    counts[reason] = counts.get(reason, 0) + total - before.get(reason, 0)
        return counts


_READER = {
    "counter": "total()",
    "gauge": "gauge()",
    "timer": "values()",
    "distribution": "values()",
    "set": "unique()",
}


def _names(events: Sequence[RecordedEvent]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for event in events:
        kinds = names.setdefault(event.name, [])
        if event.type not in kinds:
            kinds.append(event.type)
    return names


@contextmanager
def capture() -> Iterator[CapturedMetrics]:
    """Capture every metric recorded in this process inside the ``with`` block."""
    publisher.flush_all(release_held=True)  # what came before goes where it was going
    metrics = CapturedMetrics()
    previous = publisher.capture_sink()
    publisher.set_capture_sink(metrics)
    try:
        yield metrics
    finally:
        publisher.flush_all()
        publisher.set_capture_sink(previous)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixture
    pass
else:

    @pytest.fixture
    def zibrato_metrics() -> Iterator[CapturedMetrics]:
        """Capture the metrics recorded during one test."""
        with capture() as metrics:
            yield metrics
