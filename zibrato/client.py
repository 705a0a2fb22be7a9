"""The instrumentation API: ``Zibrato`` and its 2013 spellings."""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal

from zibrato import levels
from zibrato.addresses import DEFAULT_FRONTEND, DEFAULT_FRONTEND_PORT, DEFAULT_HOST
from zibrato.instruments import (
    Counter,
    LevelBuffer,
    SampledCounter,
    SampledTimer,
    Timer,
    record_sampled,
)
from zibrato.protocol import COUNTER, DISTRIBUTION, GAUGE, GAUGE_DELTA, SET, TIMER, Event
from zibrato.publisher import DEFAULT_BROKER_HINT, SERIES_KINDS, Publisher
from zibrato.security.curve import resolve as resolve_curve
from zibrato.series import Series

PUBLISH_ENV = "ZIBRATO_PUBLISH"
# Series (per kind and level) that one client records as bare values; past it, new ones
# are recorded as events (which the publisher checks one by one).
MAX_CLIENT_SERIES = 1_000


def resolve_publish(publish: str | None, host: str | None = None, port: int | None = None) -> str:
    """Return the address to publish to.

    An explicit ``publish`` wins, then the 2013 keywords ``host``/``port``, then the
    environment variable ``ZIBRATO_PUBLISH``, then ``tcp://127.0.0.1:5550``.
    """
    if publish:
        return publish
    if host is not None or port is not None:
        port = DEFAULT_FRONTEND_PORT if port is None else port
        return f"tcp://{host or DEFAULT_HOST}:{port}"
    return os.environ.get(PUBLISH_ENV) or DEFAULT_FRONTEND


class Zibrato:
    """A metrics client: timers, counters, gauges and distributions, published via ZeroMQ.

    >>> z = Zibrato(source="web-1", tags={"app": "shop"})    # doctest: +SKIP
    >>> z.incr("orders.placed")
    >>> with z.timer("orders.load"):
    ...     load()

    Recording never raises and never blocks: bad names or values, unknown levels and a
    full buffer are dropped, counted (``zibrato.publisher.dropped``) and logged once.

    ``rate=`` on counters, timers and distributions samples: each event is recorded with
    that probability and carries the rate, so backends scale its count by ``1 / rate``.
    ``rng`` decides which (default: the ``random`` module).

    ``curve=DIR`` (else ``$ZIBRATO_CURVE``) authenticates to a CURVE broker with the keys
    ``zibrato keys`` wrote; events a broker refuses are dropped the same way.

    ``broker_hint`` is the command the "no broker answers" warning tells the user to run
    (the framework adapters name their own, e.g. ``manage.py zibrato_broker``).
    """

    def __init__(
        self,
        publish: str | None = None,
        *,
        level: str = levels.DEFAULT_THRESHOLD,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        host: str | None = None,
        port: int | None = None,
        buffer_size: int = 100_000,
        linger: float = 0.25,
        publisher: Publisher | None = None,
        rng: random.Random | None = None,
        curve: str | os.PathLike[str] | None = None,
        broker_hint: str = DEFAULT_BROKER_HINT,
    ) -> None:
        self.threshold = levels.normalize(level)
        self.publisher = publisher or Publisher(
            resolve_publish(publish, host, port),
            source=source,
            tags=tags,
            buffer_size=buffer_size,
            linger=linger,
            curve=resolve_curve(curve),
            broker_hint=broker_hint,
        )
        self._soft_cap = self.publisher.wake_threshold
        self._overflow = self.publisher.overflow
        draw = (rng or random).random
        # Every spelling of a level maps to its buffer, or to None below the threshold;
        # None (no level given) maps to the default event level.
        self._queues: dict[str | None, deque[Event] | None] = {}
        self._sinks: dict[str | None, LevelBuffer | None] = {}
        # Per level spelling: the series of counters, timers and distributions recorded
        # without tags or source, by name (zibrato.series: the cheapest way to record);
        # None below the threshold.
        self._named: dict[int, dict[str | None, dict[Any, Series] | None]] = {
            kind: {} for kind in SERIES_KINDS
        }
        enabled = set(levels.at_or_above(self.threshold))
        for name in (*levels.LEVELS, *levels.ALIASES, None):
            canonical = levels.normalize(name or levels.DEFAULT_EVENT_LEVEL)
            queue = self.publisher.queues[canonical] if canonical in enabled else None
            sink = (
                LevelBuffer(queue, self._soft_cap, self._overflow, self.publisher.reject, draw)
                if queue is not None
                else None
            )
            named: dict[int, dict[Any, Series] | None] = {
                kind: {} if queue is not None else None for kind in SERIES_KINDS
            }
            spellings = (name, name.upper()) if name else (None,)
            for spelling in spellings:
                self._queues[spelling] = queue
                self._sinks[spelling] = sink
                for kind, by_name in self._named.items():
                    by_name[spelling] = named[kind]
        self._counters = self._named[COUNTER]
        self._timers = self._named[TIMER]
        self._distributions = self._named[DISTRIBUTION]

    def __repr__(self) -> str:
        return f"<Zibrato publish={self.publisher.address!r} level={self.threshold!r}>"

    # -- the slow paths --------------------------------------------------------------
    def _learn_level(self, level: object) -> str | None:
        """Handle a level spelled unusually ("Info"): learn it, or count it if invalid."""
        try:
            canonical = levels.normalize(level)  # type: ignore[arg-type]
        except ValueError:
            self.publisher.reject("invalid_level", f"level {level!r} is not one of {levels.LEVELS}")
            return None
        if isinstance(level, str) and len(self._queues) < 100:
            self._queues[level] = self._queues[canonical]
            self._sinks[level] = self._sinks[canonical]
            for by_name in self._named.values():
                by_name[level] = by_name[canonical]
        return canonical

    def _series(
        self,
        kind: int,
        level: str | None,
        name: str,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> Series | Literal[False] | None:
        """Return the series to record ``name``'s bare values into (made on first use);
        False below the threshold (or for an invalid level, counted); None when these
        fields make no series (invalid, or too many series): record an event instead."""
        try:
            named = self._named[kind][level]
        except (KeyError, TypeError):
            canonical = self._learn_level(level)
            if canonical is None:
                return False
            named = self._named[kind][canonical]
        if named is None:
            return False
        try:
            key = name if source is None and tags is None else (name, source, _items(tags))
            series = named.get(key)
        except (TypeError, AttributeError):  # an unhashable name or tag value, a non-mapping
            return None
        if series is None and type(name) is str and len(named) < MAX_CLIENT_SERIES:
            canonical = levels.normalize(level or levels.DEFAULT_EVENT_LEVEL)
            series = self.publisher.series(canonical, kind, name, source=source, tags=tags)
            if series is not None:
                named[key] = series
        return series

    def _named_value(
        self,
        by_level: dict[str | None, dict[Any, Series] | None],
        kind: int,
        name: str,
        value: Any,
        level: str | None,
    ) -> None:
        """Record one value of a series without tags or source, found by its name."""
        try:
            named = by_level[level]
            if named is None:
                return  # below the threshold
            series = named[name]
        except (KeyError, TypeError):  # a new name, an unusual level spelling
            self._record(kind, name, value, level, None, None)
            return
        # The series hand-over, written out for speed (see zibrato.series).
        values = series.values
        if len(values) < series.soft_cap:
            values.append(value)
            if len(values) == 1:
                series.dirty.append(series)
        else:
            series.overflow(series, value)

    def _record(
        self,
        kind: int,
        name: str,
        value: Any,
        level: str | None,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        """Record one value: into its series if it has one, else as an event."""
        series = self._series(kind, level, name, source, tags)
        if series:
            series.add(value)
        elif series is None:
            self._put(kind, name, value, level, source, tags)

    # -- immediate records -------------------------------------------------------------
    def incr(
        self,
        name: str,
        value: float = 1,
        rate: float | None = None,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Add ``value`` to the counter ``name`` (with probability ``rate``, when given)."""
        # ``rate`` is positional-or-keyword, as in pystatsd (``incr(name, 1, 0.1)``), and
        # not keyword-only: a keyword-only default costs every call a dict lookup.
        if rate is not None:
            self._put_sampled(COUNTER, name, value, rate, level, source, tags)
            return
        if tags is None and source is None:
            try:
                named = self._counters[level]
                if named is None:
                    return  # below the threshold
                series = named[name]
            except (KeyError, TypeError):  # a new name, an unusual level spelling
                self._record(COUNTER, name, value, level, None, None)
                return
            # The series hand-over, written out for speed (see zibrato.series).
            values = series.values
            if len(values) < series.soft_cap:
                values.append(value)
                if len(values) == 1:
                    series.dirty.append(series)
            else:
                series.overflow(series, value)
            return
        self._record(COUNTER, name, value, level, source, tags)

    def decr(
        self,
        name: str,
        value: float = 1,
        rate: float | None = None,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Subtract ``value`` from the counter ``name``: ``incr`` with ``-value``."""
        if type(value) is int or type(value) is float:
            value = -value  # anything else goes through as it is, to be counted as invalid
        self.incr(name, value, rate=rate, level=level, source=source, tags=tags)

    def gauge(
        self,
        name: str,
        value: float,
        *,
        delta: bool = False,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Set the gauge ``name`` to ``value`` (or move it by ``value`` when ``delta``)."""
        self._put(GAUGE_DELTA if delta else GAUGE, name, value, level, source, tags)

    def timing(
        self,
        name: str,
        seconds: float | timedelta,
        rate: float | None = None,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Record a duration that you measured yourself: seconds, or a ``timedelta``.

        A negative duration is dropped (counted as ``negative_duration``).
        """
        if rate is not None:
            self._put_sampled(TIMER, name, seconds, rate, level, source, tags)
            return
        if tags is None and source is None:
            self._named_value(self._timers, TIMER, name, seconds, level)
        else:
            self._record(TIMER, name, seconds, level, source, tags)

    def observe(
        self,
        name: str,
        value: float,
        rate: float | None = None,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Record one value of a distribution (sizes, counts: no unit implied)."""
        if rate is not None:
            self._put_sampled(DISTRIBUTION, name, value, rate, level, source, tags)
            return
        if tags is None and source is None:
            self._named_value(self._distributions, DISTRIBUTION, name, value, level)
        else:
            self._record(DISTRIBUTION, name, value, level, source, tags)

    def set(
        self,
        name: str,
        member: str | int,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Add ``member`` to the set ``name``: backends report its distinct members per flush.

        A member is a str of at most 255 characters or an int (``42`` and ``"42"`` are
        the same member).
        """
        self._put(SET, name, member, level, source, tags)  # type: ignore[arg-type]

    def _put(
        self,
        kind: int,
        name: str,
        value: float,
        level: str | None,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        try:
            queue = self._queues[level]
        except (KeyError, TypeError):
            canonical = self._learn_level(level)
            if canonical is None:
                return
            queue = self._queues[canonical]
        if queue is not None:
            event = (kind, name, value, source, tags)
            if len(queue) < self._soft_cap:
                queue.append(event)
            else:
                self._overflow(queue, event)

    def _put_sampled(
        self,
        kind: int,
        name: str,
        value: Any,
        rate: float,
        level: str | None,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        sink = self._sink(level)
        if sink is not None:
            record_sampled(sink, kind, name, value, source, tags, rate)

    def _sink(self, level: str | None) -> LevelBuffer | None:
        """Return the buffer of ``level``, or None when it is filtered out or invalid."""
        try:
            return self._sinks[level]
        except (KeyError, TypeError):
            canonical = self._learn_level(level)
            return None if canonical is None else self._sinks[canonical]

    # -- instruments -------------------------------------------------------------------
    def timer(
        self,
        name: str,
        rate: float | None = None,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Timer:
        """Return a timer for ``name``: a decorator, a context manager, or start()/stop()."""
        sink = self._sink(level)
        if rate is None:
            series = self._series(TIMER, level, name, source, tags) if sink is not None else None
            return Timer(sink, name, source, tags, series or None)
        return SampledTimer(sink, name, source, tags, rate)

    def counter(
        self,
        name: str,
        value: float = 1,
        rate: float | None = None,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Counter:
        """Return a counter for ``name`` that adds ``value`` per call or per ``with`` block."""
        sink = self._sink(level)
        if rate is None:
            series = self._series(COUNTER, level, name, source, tags) if sink is not None else None
            return Counter(sink, name, source, tags, value, series or None)
        return SampledCounter(sink, name, source, tags, value, rate)

    # The 2013 API: same objects, the original names.
    time_me = timer
    Time_me = timer
    count_me = counter
    Count_me = counter

    # -- lifecycle ---------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Send what has been recorded now instead of within the next batch interval."""
        self.publisher.flush(timeout)

    def close(self, linger: float | None = None) -> None:
        """Send what is pending (waiting at most ``linger`` s) and release the socket."""
        self.publisher.close(linger)

    def stats(self) -> dict[str, Any]:
        """Return this client's own counts: events sent, filtered by level, dropped."""
        pub = self.publisher
        if pub._closing:
            pub.flush()  # counts what was recorded after close()
        return {
            "sent_events": pub.sent_events,
            "sent_batches": pub.sent_batches,
            "filtered_events": pub.filtered_events,
            "dropped": dict(pub.dropped),
        }

    def __enter__(self) -> Zibrato:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _items(tags: Mapping[str, str] | None) -> tuple[tuple[str, str], ...] | None:
    """Return ``tags`` as a hashable key (by content: a new dict of the same tags finds the
    same series)."""
    return None if tags is None else tuple(tags.items())
