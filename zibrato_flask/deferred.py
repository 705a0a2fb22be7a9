"""Timers and counters made before the extension knows its app's settings.

With an app factory, ``zibrato = Zibrato()`` lives in a module and decorates functions at
import time (``@zibrato.time_me(name="report")``), long before ``init_app(app)`` says
where to publish. These instruments wait: the real one (and the client) is made the
first time they record, so importing stays free of sockets and threads and the app's
settings apply.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from zibrato.instruments import Counter, Timer

F = TypeVar("F", bound=Callable[..., Any])


class DeferredTimer(Timer):
    """A :class:`~zibrato.Timer` whose real timer is made when it is first used."""

    __slots__ = ("_make", "_real")

    def __init__(
        self,
        make: Callable[[], Timer],
        name: str,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        super().__init__(None, name, source, tags)
        self._make = make
        self._real: Timer | None = None

    def _bound(self) -> Timer:
        real = self._real
        if real is None:  # two threads may both get here: both make an equal timer
            real = self._real = self._make()
        return real

    def __enter__(self) -> Timer:
        self._bound().__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bound().__exit__(exc_type, exc, tb)

    def start(self) -> Timer:
        self._bound().start()
        return self

    def stop(self) -> float:
        return self._bound().stop()

    def __call__(self, func: F) -> F:
        return _deferred(func, lambda: self._bound()(func))


class DeferredCounter(Counter):
    """A :class:`~zibrato.Counter` whose real counter is made when it is first used."""

    __slots__ = ("_make", "_real")

    def __init__(
        self,
        make: Callable[[], Counter],
        name: str,
        value: float,
        source: str | None,
        tags: Mapping[str, str] | None,
    ) -> None:
        super().__init__(None, name, source, tags, value)
        self._make = make
        self._real: Counter | None = None

    def _bound(self) -> Counter:
        real = self._real
        if real is None:
            real = self._real = self._make()
        return real

    def _record(self) -> None:
        self._bound()._record()

    def __call__(self, func: F) -> F:
        return _deferred(func, lambda: self._bound()(func))


def _deferred(func: F, wrap: Callable[[], F]) -> F:
    """Return ``func`` wrapped so that the real instrument wraps it on its first call."""
    wrapped: list[F] = []

    def real() -> F:
        if not wrapped:  # two threads may both get here: both make the same wrapper
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
