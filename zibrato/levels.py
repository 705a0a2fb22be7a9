"""Severity levels, their aliases, and the ZeroMQ topics that carry them.

Levels are ordered ``debug < info < warning < error < crit``. Each level travels as
its own topic, and no level name is a prefix of another, so a ZeroMQ prefix
subscription to one level never matches a different one.
"""

from __future__ import annotations

LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "crit")
ALIASES: dict[str, str] = {"warn": "warning", "critical": "crit"}
DEFAULT_EVENT_LEVEL = "info"
DEFAULT_THRESHOLD = "debug"

_RANK = {name: rank for rank, name in enumerate(LEVELS)}


def normalize(level: str) -> str:
    """Return the canonical name of ``level``; raise ``ValueError`` if it is unknown."""
    if isinstance(level, str):
        name = level.lower()
        name = ALIASES.get(name, name)
        if name in _RANK:
            return name
    raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")


def rank(level: str) -> int:
    """Return the position of ``level`` in the order (debug is 0)."""
    return _RANK[normalize(level)]


def at_or_above(threshold: str) -> tuple[str, ...]:
    """Return every level at or above ``threshold``, lowest first."""
    return LEVELS[rank(threshold) :]


def topic(level: str) -> bytes:
    """Return the ZeroMQ topic frame for ``level``."""
    return normalize(level).encode("ascii")
