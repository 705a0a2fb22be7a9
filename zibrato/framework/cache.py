"""Cache calls of a unit of work: calls, hits, misses and time per cache alias.

:func:`measure` wraps the methods of one cache object (Django's cache API: ``get``,
``set``, ``get_many``...) on that object only; the adapter decides which objects (Django:
every backend its cache handler creates, whatever the class: locmem, database, file,
Redis, memcached). Inside a unit of work (a request, a Celery task) each call is a
``cache`` span of the unit's breakdown and is added to its totals for its alias (a
request records them); outside one the methods cost one context-variable read and
nothing is recorded.

* A **call** is one call the application made: a method that calls others of the same
  object (the database cache's ``get`` calls its ``get_many``; ``get_or_set`` calls
  ``get``, then on a miss ``add`` and ``get``) counts as the calls it makes at the top,
  never twice.
* A **hit** or a **miss** is one key looked up by ``get`` or ``get_many``. A miss is
  told from a cached ``None`` by asking the backend with a default of our own (a
  sentinel), then handing the caller the default it gave.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from contextvars import ContextVar
from time import perf_counter
from typing import Any

from zibrato.framework import schema
from zibrato.framework.breakdown import CACHE
from zibrato.framework.units import current_unit

# The cache API's methods that talk to the backend; get_or_set, incr_version and the
# async a* methods are built on these by Django's BaseCache, so they are counted through them.
LOOKUPS = ("get", "get_many")
OTHERS = (
    "set", "add", "delete", "set_many", "delete_many", "has_key", "incr", "decr", "touch", "clear"
)  # fmt: skip
MARK = "_zibrato_cache_alias"

# Set while a measured call runs in this context: the calls it makes itself are its own.
_in_call: ContextVar[bool] = ContextVar("zibrato_cache_call", default=False)


class _Missing:
    """The default we pass to ``get``: a value no application ever caches."""

    def __repr__(self) -> str:
        return "<zibrato: not in the cache>"


MISSING = _Missing()


def measure(cache: Any, alias: str) -> None:
    """Measure the calls to ``cache`` (one object) under ``cache.alias`` = ``alias``."""
    if cache.__dict__.get(MARK) is not None:
        return
    tag = schema.bounded(alias)
    for name in LOOKUPS + OTHERS:
        method = getattr(cache, name, None)
        if callable(method):
            wrap = _get if name == "get" else _get_many if name == "get_many" else _call
            setattr(cache, name, wrap(method, tag))
    cache.__dict__[MARK] = tag


def unmeasure(cache: Any) -> None:
    """Take the wrappers :func:`measure` put on ``cache`` off again."""
    if cache.__dict__.pop(MARK, None) is None:
        return
    for name in LOOKUPS + OTHERS:
        cache.__dict__.pop(name, None)


def _call(method: Callable[..., Any], alias: str) -> Callable[..., Any]:
    def measured(*args: Any, **kwargs: Any) -> Any:
        state = current_unit.get()
        if state is None or _in_call.get() or not state.switches.cache:
            return method(*args, **kwargs)
        token = _in_call.set(True)
        start = perf_counter()
        span = state.open_span(CACHE, start)
        try:
            return method(*args, **kwargs)
        finally:
            end = perf_counter()
            _in_call.reset(token)
            state.close_span(span, end)
            state.add_cache_call(alias, end - start, 0, 0)

    return measured


def _get(method: Callable[..., Any], alias: str) -> Callable[..., Any]:
    def get(key: Any, *args: Any, **kwargs: Any) -> Any:
        state = current_unit.get()
        if state is None or _in_call.get() or not state.switches.cache:
            return method(key, *args, **kwargs)
        if args:  # get(key, default, version=None): the default may come by position
            default, args = args[0], (MISSING, *args[1:])
        else:
            default = kwargs.get("default")
            kwargs["default"] = MISSING
        token = _in_call.set(True)
        found = MISSING
        start = perf_counter()
        span = state.open_span(CACHE, start)
        try:
            found = method(key, *args, **kwargs)
        finally:
            end = perf_counter()
            _in_call.reset(token)
            state.close_span(span, end)
            hit = found is not MISSING
            state.add_cache_call(alias, end - start, int(hit), int(not hit))
        return default if found is MISSING else found

    return get


def _get_many(method: Callable[..., Any], alias: str) -> Callable[..., Any]:
    def get_many(keys: Any, *args: Any, **kwargs: Any) -> Any:
        state = current_unit.get()
        if state is None or _in_call.get() or not state.switches.cache:
            return method(keys, *args, **kwargs)
        if not isinstance(keys, Collection):
            keys = list(keys)  # counted below, so read once here
        token = _in_call.set(True)
        found: Any = None
        start = perf_counter()
        span = state.open_span(CACHE, start)
        try:
            found = method(keys, *args, **kwargs)
            return found
        finally:
            end = perf_counter()
            _in_call.reset(token)
            state.close_span(span, end)
            hits = len(found) if isinstance(found, Collection) else 0
            state.add_cache_call(alias, end - start, hits, max(len(keys) - hits, 0))

    return get_many
