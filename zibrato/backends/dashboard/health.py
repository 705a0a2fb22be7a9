"""The pipeline's health as the dashboard shows it (``/api/health``): the dashboard's own
``zibrato.backend.*`` series and the publishers' ``zibrato.publisher.dropped``, as totals
over a window, lines on the chart's time axis, and what was dropped, by whom and why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from zibrato.aggregation import SeriesType
from zibrato.backends.dashboard.downsampling import Point, aligned, total
from zibrato.backends.dashboard.store import RECEIVED, HistoryStore, StoredSeries

HEALTH_PREFIX = "zibrato.backend."
PUBLISHER_DROPPED = "zibrato.publisher.dropped"
# The dashboard's own counters of what it dropped (the Dropped card adds the publishers').
BACKEND_DROPS = (
    "dropped_series",
    "dropped_set_members",
    "history_capped_points",
    "history_failed_points",
)


def pipeline_health(
    store: HistoryStore, start: float, end: float, step: float, axis: Sequence[Point]
) -> dict[str, Any]:
    """Return the answer of ``/api/health`` for the window ``start``..``end``."""
    groups: dict[str, list[StoredSeries]] = {}
    for series in store.list_series(RECEIVED):
        if series.name == PUBLISHER_DROPPED:
            groups.setdefault("publisher_dropped", []).append(series)
        elif series.name.startswith(HEALTH_PREFIX):
            groups.setdefault(series.name.removeprefix(HEALTH_PREFIX), []).append(series)
    points = store.points((s.id for g in groups.values() for s in g), start, end)
    totals: dict[str, float | None] = {}
    lines: dict[str, list[float | None]] = {}
    for short, members in sorted(groups.items()):
        merged = [p for s in members for p in points.get(s.id, [])]
        if members[0].type == SeriesType.GAUGE:
            last = max(merged, key=lambda p: p.ts).last if merged else None
            totals[short] = last
            lines[short] = aligned(axis, merged, step, ("last",), pooled=True)["last"]
        else:
            totals[short] = total(p.sum or 0 for p in merged)
            lines[short] = aligned(axis, merged, step, ("rate",), pooled=True)["rate"]
    return {
        "start": start,
        "end": end,
        "seconds": total(p.sum or 0 for p in axis),
        "step": step,
        "t": [p.ts for p in axis],
        "totals": totals,
        "lines": lines,
        "drops": drops(groups.get("publisher_dropped", []), points, totals),
        "history": {
            "series": store.series_count,
            "max_series": store.max_series,
            "bytes": file_bytes(store.path),
        },
    }


def drops(
    publisher_series: Iterable[StoredSeries],
    points: Mapping[int, Sequence[Point]],
    totals: Mapping[str, float | None],
) -> list[dict[str, Any]]:
    """Return what was dropped in the window, by whom and why, the most first.

    The publishers' drops come by their ``reason`` tag (every source together), the
    dashboard's own by counter name (``BACKEND_DROPS``).
    """
    found: dict[tuple[str, str], float] = {}
    for series in publisher_series:
        key = ("publisher", series.tags.get("reason", "unknown"))
        found[key] = found.get(key, 0) + total(p.sum or 0 for p in points.get(series.id, []))
    for name in BACKEND_DROPS:
        found["dashboard", name] = totals.get(name) or 0
    ranked = sorted(
        ((count, by, reason) for (by, reason), count in found.items() if count > 0),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    return [{"by": by, "reason": reason, "count": count} for count, by, reason in ranked]


def file_bytes(path: str) -> int:
    """Return the size of the SQLite history with its write-ahead log."""
    size = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            size += os.path.getsize(path + suffix)
    return size
