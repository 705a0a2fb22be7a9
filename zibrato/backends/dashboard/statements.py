"""The "repeated statements" table of a route: pure computation over stored series.

``db.client.statement.repeats`` (docs/web-metrics.md) is one series per statement,
code location, database namespace and process. A route's table has one row per
statement and location, the processes' and namespaces' series merged: the normalized SQL,
how many times it ran per request that repeated it (mean and max), in how many requests,
where the application issued it, and when it was last seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from zibrato.backends.dashboard.downsampling import Point, merge

STATEMENT_REPEATS = "db.client.statement.repeats"
ROW_TAGS = (
    "db.query.text",
    "code.file.path",
    "code.line.number",
    "code.function.name",
    "template.name",
    "template.line.number",
)
MAX_ROWS = 50


def statement_rows(
    series: Iterable[tuple[Mapping[str, str], Sequence[Point]]], end: float
) -> list[dict[str, Any]]:
    """Return the table's rows, the most requests first, from ``(tags, points)`` pairs."""
    grouped: dict[tuple[str | None, ...], list[Point]] = {}
    for tags, points in series:
        if points:
            grouped.setdefault(tuple(tags.get(key) for key in ROW_TAGS), []).extend(points)
    rows: list[tuple[float, str, dict[str, Any]]] = []
    for key, points in grouped.items():
        merged = merge(points, end)
        text, file, line, function, template, template_line = key
        code = None if file is None else {"file": file, "line": line, "function": function}
        shown = None if template is None else {"name": template, "line": template_line}
        rows.append((-(merged.count or 0), text or "", {
                "statement": text,
                "requests": merged.count or 0,
                "repeats": {"mean": merged.mean, "max": merged.max},
                "code": code,
                "template": shown,
                "last_seen": max(point.ts for point in points),
            }))  # fmt: skip
    rows.sort(key=lambda row: row[:2])
    return [row for _, _, row in rows[:MAX_ROWS]]
