"""One client per process for the front ends, created on first use, and what waits for it.

``zibrato_django`` and ``zibrato_flask`` expose a module-level client that application code
imports before any settings exist (``from zibrato_django import zibrato``) and uses to
decorate functions at import time (``@zibrato.time_me(name="report")``). A
:class:`LazyZibrato` is a real :class:`~zibrato.Zibrato` whose construction waits until
the first metric is recorded, then reads its keyword arguments from a callable; a timer
or counter asked of it before then is a :class:`DeferredTimer` / :class:`DeferredCounter`
that makes the real one (and so the client) the first time it records. So importing and
decorating read no setting, open no socket and start no thread, and the hot path of a
started client is exactly a ``Zibrato``'s.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from zibrato.client import Zibrato
from zibrato.instruments import Counter, Timer

F = TypeVar("F", bound=Callable[..., Any])
_INIT_LOCK = threading.RLock()
# The attributes Zibrato.__init__ sets: asking a lazy client for one starts it. Asking for
# any other (pytest's fixture collection probes every module-level object for a mock's
# ``_mock_name``) is an AttributeError that starts nothing: no socket, no thread.
CLIENT_ATTRIBUTES = frozenset(
    (
        "threshold", "publisher", "_soft_cap", "_overflow", "_queues", "_sinks", "_named",
        "_counters", "_timers", "_distributions",
    )
)  # fmt: skip


class LazyZibrato(Zibrato):
    """A ``Zibrato`` built on first use from ``settings()``, the keywords of ``Zibrato()``.

    >>> zibrato = LazyZibrato(lambda: {"publish": "tcp://127.0.0.1:5550", "source": "web-1"})
    >>> @zibrato.time_me(name="report")      # nothing starts yet
    ... def report(): ...
    >>> zibrato.incr("orders.placed")        # the client (and its thread) start here

    Fork-safe like any client: a forked child gets its own socket and thread. ``reset()``
    closes the client so that the next use reads the settings again (for settings that
    change in tests); timers and counters made before a reset keep the old client.
    """

    def __init__(self, settings: Callable[[], Mapping[str, Any]]) -> None:
        # Deliberately not Zibrato.__init__: attributes appear on first use (__getattr__).
        object.__setattr__(self, "_settings", settings)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes that do not exist yet, i.e. before the first use.
        if name not in CLIENT_ATTRIBUTES:
            raise AttributeError(name)
        with _INIT_LOCK:
            if "publisher" not in self.__dict__:
                Zibrato.__init__(self, **self._settings())
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        if "publisher" not in self.__dict__:
            return f"<{type(self).__name__} (not started)>"
        return (
            f"<{type(self).__name__} publish={self.publisher.address!r} level={self.threshold!r}>"
        )

    @property
    def started(self) -> bool:
        """Whether the client exists yet (a metric was recorded or it was asked for)."""
        return "publisher" in self.__dict__

    def reset(self, linger: float | None = None) -> None:
        """Close the client (sending what is pending); the next use builds a new one."""
        with _INIT_LOCK:
            if "publisher" not in self.__dict__:
                return
            publisher = self.publisher
            settings = self._settings
            self.__dict__.clear()
            object.__setattr__(self, "_settings", settings)
        publisher.close(linger)

    # -- instruments made before the first use wait for it ------------------------------
    def timer(
        self,
        name: str,
        rate: float | None = None,
        *,
        level: str | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Timer:
        """Return a timer for ``name``: use it as a decorator or a context manager."""

        def make() -> Timer:
            return Zibrato.timer(self, name, rate, level=level, source=source, tags=tags)

        return make() if self.started else DeferredTimer(make, name, source, tags)

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

        def make() -> Counter:
            return Zibrato.counter(self, name, value, rate, level=level, source=source, tags=tags)

        return make() if self.started else DeferredCounter(make, name, value, source, tags)

    time_me = timer
    Time_me = timer
    count_me = counter
    Count_me = counter


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
