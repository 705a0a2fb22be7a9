"""Replacing a library's method where it has no hook: idempotent, reversible, and polite.

Only where a library documents no hook (urllib3's connection pool, httpx's transports,
template rendering) does Zibrato wrap a method, and always through a :class:`Patch`:

* installing twice wraps once;
* the original is kept, and :meth:`Patch.uninstall` puts it back;
* other instrumentation of the same method (OpenTelemetry's, Sentry's, ddtrace's) keeps
  working in either order: each wrapper calls what it found. If another wrapper was
  installed over ours, uninstalling cannot take ours out of the middle of the chain
  without breaking theirs, so ours stays and passes every call straight through.

>>> class Pool:
...     def urlopen(self, url): return url
>>> def measured(original):
...     def urlopen(self, url): return original(self, url).upper()
...     return urlopen
>>> patch = Patch(Pool, "urlopen", measured)
>>> patch.install(); patch.install(); Pool().urlopen("a")
'A'
>>> patch.uninstall(); Pool().urlopen("a")
'a'
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class Patch:
    """One method of one class, wrapped by ``wrap(original)`` while installed."""

    def __init__(self, owner: type, name: str, wrap: Callable[[Any], Any]) -> None:
        self.owner = owner
        self.name = name
        self.wrap = wrap
        self.original: Any = None
        self._wrapper: Any = None
        self._owned = False  # whether the owner defined the method itself (not inherited)
        self._passing_through = False

    def __repr__(self) -> str:
        state = "installed" if self.installed else "not installed"
        return f"<Patch {self.owner.__module__}.{self.owner.__qualname__}.{self.name} {state}>"

    @property
    def installed(self) -> bool:
        """Whether our wrapper is in place and measuring."""
        return self._wrapper is not None and not self._passing_through

    def install(self) -> None:
        """Wrap the method (once; again after an uninstall)."""
        if self._wrapper is not None:
            self._passing_through = False  # ours is still in the chain: measure again
            return
        self._owned = self.name in self.owner.__dict__
        original = self.owner.__dict__[self.name] if self._owned else getattr(self.owner, self.name)
        measured = self.wrap(original)
        patch = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if patch._passing_through:
                return original(*args, **kwargs)
            return measured(*args, **kwargs)

        wrapper.__zibrato_patch__ = self  # type: ignore[attr-defined]
        self.original = original
        self._wrapper = wrapper
        setattr(self.owner, self.name, wrapper)

    def uninstall(self) -> None:
        """Put the original back, or pass through if someone wrapped ours since."""
        if self._wrapper is None:
            return
        if self.owner.__dict__.get(self.name) is self._wrapper:
            if self._owned:
                setattr(self.owner, self.name, self.original)
            else:
                delattr(self.owner, self.name)  # it was inherited: inherit it again
            self._wrapper = None
            self.original = None
            self._passing_through = False
        else:
            self._passing_through = True
