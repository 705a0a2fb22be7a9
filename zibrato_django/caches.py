"""Cache calls per request, for every alias of ``CACHES`` and every backend class.

Django has no cache hook, so the backends its cache handler creates are measured as they
are created: :func:`install` wraps ``django.core.cache.caches.create_connection`` on that
one handler object (``CACHES`` itself is never touched), and each new backend gets
:func:`zibrato.framework.cache.measure` with its alias (``cache.alias``). Locmem,
database, file, Redis and memcached backends are all the same to it: the wrappers sit on
the cache API (``get``, ``set``, ``get_many``...), so ``django.core.cache.cache``,
``caches["x"]`` and the async ``aget``... (which call the sync methods) are all measured.
"""

from __future__ import annotations

from typing import Any

from zibrato.framework import cache as measured_cache

_original: list[Any] = []  # the handler's create_connection while ours is installed


def install() -> None:
    """Measure the backends created from now on, and those this thread already has."""
    from django.core.cache import caches

    if not _original:
        original = caches.create_connection

        def create_connection(alias: str) -> Any:
            backend = original(alias)
            measured_cache.measure(backend, alias)
            return backend

        _original.append(original)
        caches.create_connection = create_connection  # type: ignore[method-assign]
    for alias, backend in _existing(caches):
        measured_cache.measure(backend, alias)


def uninstall() -> None:
    """Stop measuring: new backends are plain again, and this thread's lose the wrappers."""
    from django.core.cache import caches

    if _original:
        caches.__dict__.pop("create_connection", None)
        _original.clear()
    for _, backend in _existing(caches):
        measured_cache.unmeasure(backend)


def _existing(caches: Any) -> list[tuple[str, Any]]:
    """The backends this thread's handler has created so far, with their aliases."""
    connections = getattr(caches, "_connections", None)
    return [(alias, caches[alias]) for alias in caches if hasattr(connections, alias)]
