"""Timer and counter objects: each is a decorator (sync or async) and a context manager.

They are created by :class:`zibrato.Zibrato` (``timer``/``time_me``/``Time_me`` and
``counter``/``count_me``/``Count_me``) and append straight to the publisher's per-level
buffer, so recording costs one ``deque.append``. When the level is below the client's
threshold, the buffer is ``None`` and a decorator returns the function unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections import deque
from collections.abc import Callable, Mapping
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar, cast

from zibrato.protocol import Event, Kind

F = TypeVar("F", bound=Callable[..., Any])

_TIMER = int(Kind.TIMER)
_COUNTER = int(Kind.COUNTER)


class _Instrument:
    __slots__ = ("_full", "_queue", "_cap", "name", "source", "tags")

    def __init__(
        self,
        queue: deque[Event] | None,
        cap: int,
        full: Callable[[], None],
        name: str,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        self._queue = queue
        self._cap = cap
        self._full = full
        self.name = name
        self.source = source
        self.tags = tags

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Timer(_Instrument):
    """Time a block or every call of a function, in seconds, even when it raises.

    >>> with z.timer("orders.load"):            # doctest: +SKIP
    ...     load_orders()
    >>> @z.timer("orders.load")                 # doctest: +SKIP
    ... async def load_orders(): ...

    One Timer object times one block at a time per thread; ``z.timer(...)`` gives a new
    one for each ``with``, and a decorated function may be called from any thread.
    """

    __slots__ = ("_starts",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._starts: list[float] = []

    def __enter__(self) -> Timer:
        self._starts.append(perf_counter())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = perf_counter() - self._starts.pop()
        queue = self._queue
        if queue is not None:
            if len(queue) < self._cap:
                queue.append((_TIMER, self.name, elapsed, self.source, self.tags))
            else:
                self._full()

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
        queue = self._queue
        if queue is None:
            return func  # level filtered out: no cost at all
        cap, full, name, source, tags = self._cap, self._full, self.name, self.source, self.tags

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = perf_counter()
                try:
                    return await func(*args, **kwargs)
                finally:
                    if len(queue) < cap:
                        queue.append((_TIMER, name, perf_counter() - start, source, tags))
                    else:
                        full()

            return cast(F, timed_async)

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                if len(queue) < cap:
                    queue.append((_TIMER, name, perf_counter() - start, source, tags))
                else:
                    full()

        return cast(F, timed)


class Counter(_Instrument):
    """Count each entry into a block, or each call of a function, by ``value``.

    >>> with z.counter("jobs.run"):             # doctest: +SKIP
    ...     run_job()
    >>> @z.counter("jobs.run", 5)               # doctest: +SKIP
    ... def run_job(): ...
    """

    __slots__ = ("value",)

    def __init__(self, *args: Any, value: float = 1) -> None:
        super().__init__(*args)
        self.value = value

    def _record(self) -> None:
        queue = self._queue
        if queue is not None:
            if len(queue) < self._cap:
                queue.append((_COUNTER, self.name, self.value, self.source, self.tags))
            else:
                self._full()

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
        if self._queue is None:
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
