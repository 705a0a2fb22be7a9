"""Backends: where aggregated metrics go. Each kind is one module.

``load(kind)`` returns the class for a built-in kind (``console``, ``jsonl``, ``statsd``,
``graphite``, ``prometheus``, ``librato``) or for a dotted path ``package.module:Class``.
"""

from __future__ import annotations

import importlib

from zibrato.backends.base import Backend, Option

BUILTIN: dict[str, str] = {
    "console": "zibrato.backends.console:ConsoleBackend",
    "jsonl": "zibrato.backends.jsonl:JsonLinesBackend",
    "statsd": "zibrato.backends.statsd:StatsdBackend",
    "graphite": "zibrato.backends.graphite:GraphiteBackend",
    "prometheus": "zibrato.backends.prometheus:PrometheusBackend",
    "librato": "zibrato.backends.librato:LibratoBackend",
    "dashboard": "zibrato.backends.dashboard:DashboardBackend",
}


class UnknownBackend(LookupError):
    """The named backend kind or class could not be found."""


def load(kind: str) -> type[Backend]:
    """Return the backend class for a built-in ``kind`` or a ``module:Class`` path."""
    target = BUILTIN.get(kind, kind)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise UnknownBackend(
            f"unknown backend {kind!r}: use one of {', '.join(BUILTIN)} or package.module:Class"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownBackend(f"cannot load backend {kind!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UnknownBackend(f"{kind!r} is not a zibrato.backends.Backend subclass")
    return cls


__all__ = ["BUILTIN", "Backend", "Option", "UnknownBackend", "load"]
