"""Timers and counters made before the extension knows its app's settings.

With an app factory, ``zibrato = Zibrato()`` lives in a module and decorates functions at
import time (``@zibrato.time_me(name="report")``), long before ``init_app(app)`` says
where to publish. These instruments wait: they find their client the first time they
record, so importing stays free of sockets and threads and the app's settings apply.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from zibrato.instruments import Counter, LevelBuffer, Timer

F = TypeVar("F", bound=Callable[..., Any])


class SinkSource(Protocol):
    """What a deferred instrument asks for its sink on first use: the extension."""

    def sink_for(self, level: str | None) -> LevelBuffer | None: ...


class DeferredTimer(Timer):
    """A :class:`~zibrato.Timer` that finds its client when it first records."""

    __slots__ = ("_level", "_owner")

    def __init__(
        self,
        owner: SinkSource,
        name: str,
        level: str | None,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        super().__init__(None, name, source, tags)
        self._owner: SinkSource | None = owner
        self._level = level

    def _bind(self) -> None:
        owner = self._owner
        if owner is not None:
            self._sink = owner.sink_for(self._level)
            self._owner = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bind()
        super().__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        return _deferred(self, func, lambda: Timer.__call__(self, func))


class DeferredCounter(Counter):
    """A :class:`~zibrato.Counter` that finds its client when it first records."""

    __slots__ = ("_level", "_owner")

    def __init__(
        self,
        owner: SinkSource,
        name: str,
        value: float,
        level: str | None,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        super().__init__(None, name, source, tags, value)
        self._owner: SinkSource | None = owner
        self._level = level

    def _bind(self) -> None:
        owner = self._owner
        if owner is not None:
            self._sink = owner.sink_for(self._level)
            self._owner = None

    def _record(self) -> None:
        self._bind()
        super()._record()

    def __call__(self, func: F) -> F:
        return _deferred(self, func, lambda: Counter.__call__(self, func))


def _deferred(instrument: DeferredTimer | DeferredCounter, func: F, wrap: Callable[[], F]) -> F:
    """Return ``func`` wrapped so that the real instrument is made on its first call."""
    wrapped: list[F] = []

    def real() -> F:
        if not wrapped:  # two threads may both get here: both make the same wrapper
            instrument._bind()
            wrapped.append(wrap())
        return wrapped[0]

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def deferred_async(*args: Any, **kwargs: Any) -> Any:
            return await real()(*args, **kwargs)

        return cast(F, deferred_async)

    @functools.wraps(func)
    def deferred(*args: Any, **kwargs: Any) -> Any:
        return real()(*args, **kwargs)

    return cast(F, deferred)
