"""Timer and counter objects: each is a decorator (sync or async) and a context manager.

They are created by :class:`zibrato.Zibrato` (``timer``/``time_me``/``Time_me`` and
``counter``/``count_me``/``Count_me``) and append straight to the publisher's per-level
buffer, so recording costs one ``deque.append``. When the level is below the client's
threshold the sink is ``None``: nothing is recorded, and a decorator returns the
function unchanged. With a sample ``rate`` the client returns :class:`SampledTimer` or
:class:`SampledCounter` instead, so the unsampled instruments pay nothing for sampling.
"""

from __future__ import annotations

import functools
import inspect
from collections import deque
from collections.abc import Callable, Mapping
from time import perf_counter
from types import TracebackType
from typing import Any, NamedTuple, TypeVar, cast

from zibrato import protocol
from zibrato.protocol import COUNTER, TIMER, Event
from zibrato.series import Series

F = TypeVar("F", bound=Callable[..., Any])


class LevelBuffer(NamedTuple):
    """Where an instrument appends: one level's buffer, and what to call past ``soft_cap``.

    Below ``soft_cap`` an event is a plain ``append``; past it, ``overflow(queue, event)``
    wakes the publisher thread and enforces the hard bound (counting drops).
    ``reject(reason, detail)`` counts an event that is not recorded, and ``random()``
    (uniform in [0, 1)) decides which sampled events are.
    """

    queue: deque[Event]
    soft_cap: int
    overflow: Callable[[deque[Event], Event], None]
    reject: Callable[[str, str], None]
    random: Callable[[], float]


def record_sampled(
    sink: LevelBuffer,
    kind: int,
    name: str,
    value: Any,
    source: str | None,
    tags: Mapping[str, str] | None,
    rate: float,
) -> None:
    """Record one event with probability ``rate``; it carries the rate for the backends.

    An invalid rate (not a number in (0, 1]) drops the event, counted as ``invalid_rate``.
    """
    if not protocol.check_rate(rate):
        sink.reject("invalid_rate", f"sample rate {rate!r} of {name!r} is not in (0, 1]")
        return
    if rate < 1:
        if sink.random() >= rate:
            return
        event: Event = (kind, name, value, source, tags, rate)
    else:
        event = (kind, name, value, source, tags)  # rate 1: what every backend reads
    append_event(sink, event)


def append_event(sink: LevelBuffer, event: Event) -> None:
    """Append one event to a level's queue, or past its soft cap hand it to ``overflow``
    (which wakes the sender and enforces the hard bound)."""
    queue = sink.queue
    if len(queue) < sink.soft_cap:
        queue.append(event)
    else:
        sink.overflow(queue, event)


def _timed(func: F, record: Callable[[float], None]) -> F:
    """Return ``func`` wrapped to time every call (sync or async) and ``record`` it."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                record(perf_counter() - start)

        return cast(F, timed_async)

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            record(perf_counter() - start)

    return cast(F, timed)


class Timer:
    """Time a block or every call of a function, in seconds, even when it raises.

    >>> with z.timer("orders.load"):            # doctest: +SKIP
    ...     load_orders()
    >>> @z.timer("orders.load")                 # doctest: +SKIP
    ... async def load_orders(): ...

    Or start and stop it by hand; ``stop()`` records and returns the elapsed seconds:

    >>> timer = z.timer("orders.load").start()      # doctest: +SKIP
    >>> seconds = timer.stop()

    ``z.timer(...)`` gives a new Timer for each ``with``; a decorated function may be
    called from any number of threads. One Timer object entered from two threads at once
    would mix their start times, so share the decorator, not the object.
    """

    __slots__ = ("_outer", "_series", "_sink", "_start", "name", "source", "tags")

    def __init__(
        self,
        sink: LevelBuffer | None,
        name: str,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        series: Series | None = None,
    ) -> None:
        self._sink = sink
        # Where durations go as bare values (zibrato.series); None: as events, to ``sink``.
        self._series = series if sink is not None else None
        self.name = name
        self.source = source
        self.tags = tags
        self._start: float | None = None
        self._outer: list[float] | None = None

    def __repr__(self) -> str:
        return f"<Timer {self.name!r}>"

    def __enter__(self) -> Timer:
        if self._start is not None:  # the same object entered again before it exited
            if self._outer is None:
                self._outer = []
            self._outer.append(self._start)
        self._start = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # stop() inlined: this is the hot path of every timed block.
        elapsed = perf_counter() - self._start  # type: ignore[operator]
        self._start = self._outer.pop() if self._outer else None
        series = self._series
        if series is None:
            self._record(elapsed)
            return
        # The series hand-over, written out for speed (see zibrato.series).
        values = series.values
        if len(values) < series.soft_cap:
            values.append(elapsed)
            if len(values) == 1:
                series.dirty.append(series)
        else:
            series.overflow(series, elapsed)

    def start(self) -> Timer:
        """Start timing, as entering a ``with`` block does; return the timer."""
        return self.__enter__()

    def stop(self) -> float:
        """Stop timing, record the elapsed seconds, and return them.

        A ``stop()`` without a ``start()`` records nothing and returns 0.0 (counted as the
        drop ``timer_not_started``, logged once).
        """
        if self._start is None:
            if self._sink is not None:
                self._sink.reject("timer_not_started", f"{self.name!r}: stop() before start()")
            return 0.0
        elapsed = perf_counter() - self._start
        self._start = self._outer.pop() if self._outer else None
        self._record(elapsed)
        return elapsed

    def _record(self, elapsed: float) -> None:
        if self._series is not None:
            self._series.add(elapsed)
        elif self._sink is not None:
            append_event(self._sink, (TIMER, self.name, elapsed, self.source, self.tags))

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        if self._sink is None:
            return func  # level filtered out: no cost at all
        series = self._series
        if series is None:
            return _timed(func, self._record)
        values, dirty, soft_cap, overflow = (
            series.values,
            series.dirty,
            series.soft_cap,
            series.overflow,
        )

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    elapsed = perf_counter() - start
                    # The series hand-over, written out for speed (see zibrato.series).
                    if len(values) < soft_cap:
                        values.append(elapsed)
                        if len(values) == 1:
                            dirty.append(series)
                    else:
                        overflow(series, elapsed)

            return cast(F, timed_async)

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = perf_counter() - start
                # The series hand-over, written out for speed (see zibrato.series).
                if len(values) < soft_cap:
                    values.append(elapsed)
                    if len(values) == 1:
                        dirty.append(series)
                else:
                    overflow(series, elapsed)

        return cast(F, timed)


class Counter:
    """Count each entry into a block, or each call of a function, by ``value``.

    >>> with z.counter("jobs.run"):             # doctest: +SKIP
    ...     run_job()
    >>> @z.counter("jobs.run", 5)               # doctest: +SKIP
    ... def run_job(): ...
    """

    __slots__ = ("_series", "_sink", "name", "source", "tags", "value")

    def __init__(
        self,
        sink: LevelBuffer | None,
        name: str,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        value: float = 1,
        series: Series | None = None,
    ) -> None:
        self._sink = sink
        # Where increments go as bare values (zibrato.series); None: as events, to ``sink``.
        self._series = series if sink is not None else None
        self.name = name
        self.source = source
        self.tags = tags
        self.value = value

    def __repr__(self) -> str:
        return f"<Counter {self.name!r}>"

    def _record(self) -> None:
        if self._series is not None:
            self._series.add(self.value)
        elif self._sink is not None:
            append_event(self._sink, (COUNTER, self.name, self.value, self.source, self.tags))

    def __enter__(self) -> Counter:
        self._record()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def __aenter__(self) -> Counter:
        self._record()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __call__(self, func: F) -> F:
        if self._sink is None:
            return func
        record = self._record

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def counted_async(*args: Any, **kwargs: Any) -> Any:
                record()
                return await func(*args, **kwargs)

            return cast(F, counted_async)

        @functools.wraps(func)
        def counted(*args: Any, **kwargs: Any) -> Any:
            record()
            return func(*args, **kwargs)

        return cast(F, counted)


class SampledTimer(Timer):
    """A :class:`Timer` that records each duration with probability ``rate``.

    >>> with z.timer("cache.get", rate=0.1):      # doctest: +SKIP
    ...     cache.get(key)

    Every recorded duration carries the rate, so a backend counts it ``1 / rate`` times.
    """

    __slots__ = ("rate",)

    def __init__(
        self,
        sink: LevelBuffer | None,
        name: str,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        rate: float = 1.0,
    ) -> None:
        super().__init__(sink, name, source, tags)
        self.rate = rate

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, elapsed: float) -> None:
        if self._sink is not None:
            record_sampled(self._sink, TIMER, self.name, elapsed, self.source, self.tags, self.rate)

    def __call__(self, func: F) -> F:
        if self._sink is None:
            return func
        return _timed(func, self._record)


class SampledCounter(Counter):
    """A :class:`Counter` that records each increment with probability ``rate``."""

    __slots__ = ("rate",)

    def __init__(
        self,
        sink: LevelBuffer | None,
        name: str,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        value: float = 1,
        rate: float = 1.0,
    ) -> None:
        super().__init__(sink, name, source, tags, value)
        self.rate = rate

    def _record(self) -> None:
        if self._sink is not None:
            record_sampled(
                self._sink, COUNTER, self.name, self.value, self.source, self.tags, self.rate
            )
