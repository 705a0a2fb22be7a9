"""One client per process for the framework adapters, created on first use.

``zibrato_django`` and ``zibrato_flask`` expose a module-level client that application code
imports before any settings exist (``from zibrato_django import zibrato``). A
:class:`LazyZibrato` is a real :class:`~zibrato.Zibrato` whose construction waits until
the first metric is recorded, then reads its keyword arguments from a callable: so
importing it has no side effect, and the hot path is exactly a ``Zibrato``'s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from zibrato.client import Zibrato

_INIT_LOCK = threading.RLock()


class LazyZibrato(Zibrato):
    """A ``Zibrato`` built on first use from ``settings()``, the keywords of ``Zibrato()``.

    >>> zibrato = LazyZibrato(lambda: {"publish": "tcp://127.0.0.1:5550", "source": "web-1"})
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
        if name.startswith("__") or name == "_settings":
            raise AttributeError(name)
        with _INIT_LOCK:
            if "publisher" not in self.__dict__:
                Zibrato.__init__(self, **self._settings())
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        if "publisher" not in self.__dict__:
            return "<LazyZibrato (not started)>"
        return f"<LazyZibrato publish={self.publisher.address!r} level={self.threshold!r}>"

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
