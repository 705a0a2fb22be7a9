"""Metric names for dotted-path targets (statsd, Graphite): one rule for both.

A series gets the same path whichever way it reaches Graphite: folded tags are
``[PREFIX.]NAME[.KEY.VALUE]...`` with the tags sorted by key and the source as the tag
``source``; characters that would break a line format become ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal

from zibrato.aggregation import Series

HEALTH_PREFIX = "zibrato.backend."  # every backend's own health series (base.Backend)

_BAD_NAME = re.compile(r"[^A-Za-z0-9_.\-]")
_BAD_PART = re.compile(r"[^A-Za-z0-9_\-]")
_BAD_TAG_KEY = re.compile(r"[^A-Za-z0-9_.\-/]")
_BAD_TAG_VALUE = re.compile(r"[^A-Za-z0-9_.\-/:]")


def parse_address(address: str, *, default_port: int) -> tuple[str, int]:
    """Split ``host:port``, ``[v6::addr]:port`` or a bare host into (host, port)."""
    host, port = address.strip(), ""
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {address!r}: expected [host]:port")
        port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not host:
        raise ValueError(f"invalid address {address!r}: no host")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {address!r}: bad port {port!r}")
    return host, int(port)


def clean_name(name: str, prefix: str | None = None) -> str:
    """Return ``[prefix.]name`` with characters outside ``[A-Za-z0-9_.-]`` made ``_``."""
    if prefix:
        name = f"{prefix}.{name}"
    parts = [part for part in _BAD_NAME.sub("_", name).split(".") if part]
    return ".".join(parts) or "_"


def clean_part(text: str) -> str:
    """Return one dotted-path component: characters outside ``[A-Za-z0-9_-]`` made ``_``."""
    return _BAD_PART.sub("_", text) or "_"


def clean_tag_key(key: str) -> str:
    """Return a tag key for tag-aware targets: keeps ``[A-Za-z0-9_./-]``."""
    return _BAD_TAG_KEY.sub("_", key) or "_"


def clean_tag_value(value: str) -> str:
    """Return a tag value for tag-aware targets: keeps ``[A-Za-z0-9_./:-]``."""
    return _BAD_TAG_VALUE.sub("_", value) or "_"


def series_tags(series: Series) -> dict[str, str]:
    """Return the tags of ``series`` sorted by key, with its source as tag ``source``."""
    tags: Mapping[str, str] = series.tags
    if series.source is not None:
        tags = {**tags, "source": series.source}
    return dict(sorted(tags.items()))


def dotted_name(series: Series, prefix: str | None = None) -> str:
    """Return ``[prefix.]name.key.value...``: the tags folded into a dotted path."""
    parts = [clean_name(series.name, prefix)]
    for key, value in series_tags(series).items():
        parts += (clean_part(key), clean_part(value))
    return ".".join(parts)


def format_number(value: float) -> str:
    """Return ``value`` as a plain decimal: no exponent, a float to 15 significant digits."""
    if type(value) is int:
        return str(value)
    if value == 0:
        return "0"
    text = format(value, ".15g")
    if "e" in text:
        text = format(Decimal(text), "f")
    return text


def split_health(
    series: Iterable[Series], kind: str
) -> tuple[tuple[Series, ...], tuple[Series, ...]]:
    """Return (health, data): a ``kind`` backend's own ``zibrato.backend.*`` series first."""
    health: list[Series] = []
    data: list[Series] = []
    for one in series:
        own = one.name.startswith(HEALTH_PREFIX) and one.tags.get("backend") == kind
        (health if own else data).append(one)
    return tuple(health), tuple(data)
