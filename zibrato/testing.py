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
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from zibrato import protocol, publisher
from zibrato.protocol import Event

__all__ = ["CapturedMetrics", "RecordedEvent", "capture", "zibrato_metrics"]


@dataclass(frozen=True)
class RecordedEvent:
    """One event as a backend would see it: tags merged, source resolved."""

    type: str
    name: str
    value: float
    level: str
    source: str | None
    tags: dict[str, str] = field(default_factory=dict)
    delta: bool = False


class CapturedMetrics:
    """The events recorded while a capture is active, with helpers to query them."""

    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._lock = threading.Lock()
        # Drop counts when the capture began, per publisher, so only later ones count.
        self._dropped_before = {id(pub): dict(pub.dropped) for pub in list(publisher._live)}

    def receive(
        self,
        level: str,
        source: str | None,
        tags: Mapping[str, str] | None,
        events: Sequence[Event],
    ) -> None:
        recorded = [
            RecordedEvent(
                type=protocol.KIND_NAMES[kind],
                name=name,
                value=value,
                level=level,
                source=event_source or source,
                tags=protocol.merged_tags(tags, event_tags),
                delta=kind == protocol.Kind.GAUGE_DELTA,
            )
            for kind, name, value, event_source, event_tags in events
        ]
        with self._lock:
            self._events.extend(recorded)

    @property
    def events(self) -> list[RecordedEvent]:
        """Every event recorded so far (pending events are flushed first)."""
        publisher.flush_all()
        with self._lock:
            return list(self._events)

    def filter(
        self, name: str, *, type: str | None = None, tags: Mapping[str, str] | None = None
    ) -> list[RecordedEvent]:
        """Return the events called ``name`` (of ``type``, carrying ``tags``, when given)."""
        return [
            event
            for event in self.events
            if event.name == name
            and (type is None or event.type == type)
            and (not tags or all(event.tags.get(k) == v for k, v in tags.items()))
        ]

    def values(self, name: str, *, tags: Mapping[str, str] | None = None) -> list[float]:
        """Return the recorded values of ``name``, in order."""
        return [event.value for event in self.filter(name, tags=tags)]

    def total(self, name: str, *, tags: Mapping[str, str] | None = None) -> float:
        """Return the sum of the counter ``name``."""
        return sum(event.value for event in self.filter(name, type="counter", tags=tags))

    def gauge(self, name: str, *, tags: Mapping[str, str] | None = None) -> float | None:
        """Return the current value of the gauge ``name`` (deltas applied), or None."""
        current: float | None = None
        for event in self.filter(name, type="gauge", tags=tags):
            current = (current or 0) + event.value if event.delta else event.value
        return current

    @property
    def dropped(self) -> dict[str, int]:
        """Events that clients refused while capturing (bad values, names, levels...)."""
        publisher.flush_all()
        counts: dict[str, int] = {}
        for pub in list(publisher._live):
            before = self._dropped_before.get(id(pub), {})
            for reason, total in pub.dropped.items():
                if total - before.get(reason, 0):
                    counts[reason] = counts.get(reason, 0) + total - before.get(reason, 0)
        return counts

    def clear(self) -> None:
        """Forget everything captured so far."""
        publisher.flush_all()
        with self._lock:
            self._events.clear()


@contextmanager
def capture() -> Iterator[CapturedMetrics]:
    """Capture every metric recorded in this process inside the ``with`` block."""
    publisher.flush_all(release_held=True)  # what came before goes where it was going
    metrics = CapturedMetrics()
    previous = publisher._capture_sink
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
