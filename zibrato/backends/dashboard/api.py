"""The dashboard's JSON API under ``/api/`` (documented in docs/dashboard.md).

Every chart endpoint answers with one time axis ``t`` (seconds since the epoch, the end of
each span) and arrays aligned to it, ready for uPlot. ``t`` comes from the flushes
themselves, so a series without a point at some ``t`` saw no events then: counts and
rates are 0 there, statistics of values are null. Long windows are merged into buckets
of ``step`` seconds (``downsampling.merge``), at most about ``MAX_POINTS`` per line.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from zibrato.aggregation import SeriesType
from zibrato.backends.dashboard.downsampling import (
    PERCENTILES,
    Point,
    aligned,
    downsample,
    merge,
    statistic,
    total,
)
from zibrato.backends.dashboard.health import file_bytes, pipeline_health
from zibrato.backends.dashboard.routes import (
    BREAKDOWN,
    COMPONENTS,
    DB_TIME,
    DUPLICATES,
    ERRORS,
    QUERIES,
    REQUEST,
    ROUTE_TAG,
    VIEW,
    summary_key,
)
from zibrato.backends.dashboard.statements import STATEMENT_REPEATS, statement_rows
from zibrato.backends.dashboard.store import RECEIVED, ROUTE, HistoryStore, StoredSeries
from zibrato.backends.toolkit.httpserver import BadRequest, Handler, Request, Response

API_VERSION = 1
MAX_POINTS = 600
MAX_LINES = 12  # explorer lines per chart
MAX_TAG_VALUES = 200  # per tag key in /api/metrics
DEFAULT_WINDOW = 3600.0
DEFAULT_TABLE_WINDOW = 300.0
MAX_WINDOW = 366 * 86400.0
LATEST_END = 1e11  # seconds since the epoch: the year 5138, well inside what SQLite stores
NICE_STEPS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400)
VALUE_STATS = (*PERCENTILES, "mean", "min", "max")
STATS_BY_TYPE: dict[str, tuple[str, ...]] = {
    SeriesType.COUNTER: ("rate", "sum"),
    SeriesType.GAUGE: ("last", "min", "max"),
    SeriesType.SET: ("last", "min", "max"),  # distinct members per flush
    "timer": (*VALUE_STATS, "count", "rate"),
    "distribution": (*VALUE_STATS, "count", "rate"),
}
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)

Row = dict[str, Any]  # one row of a table, as JSON


def nice_step(window: float, flush_interval: float) -> float:
    """Return 0 (one point per flush) or a round bucket size that keeps a line short."""
    if window / max(flush_interval, 1e-3) <= MAX_POINTS:
        return 0
    wanted = window / MAX_POINTS
    return next((step for step in NICE_STEPS if step >= wanted), math.ceil(wanted))


def _summary(point: Point | None, stats: Sequence[str]) -> dict[str, float | None] | None:
    if point is None:
        return None
    return {stat: statistic(point, stat, 0) for stat in stats}


class DashboardApi:
    """The handlers of ``/api/*``, reading a :class:`HistoryStore`."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        flush_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.clock = clock

    def routes(self) -> dict[str, Handler]:
        """Return the API's paths and handlers."""
        return {
            "/api/status": self.status,
            "/api/routes": self.route_table,
            "/api/route": self.route_charts,
            "/api/statements": self.statements,
            "/api/metrics": self.metrics,
            "/api/series": self.series,
            "/api/health": self.health,
        }

    # -- parameters --------------------------------------------------------------------
    def _span(self, request: Request, default: float) -> tuple[float, float]:
        window = _number(request, "window", default, 1.0, MAX_WINDOW)
        end = _number(request, "end", self.clock(), 0.0, LATEST_END)
        return end - window, end

    def _axis(self, request: Request, default: float) -> tuple[float, float, float, list[Point]]:
        """Return (start, end, step, the flushes' spans as the time axis)."""
        start, end = self._span(request, default)
        step = nice_step(end - start, self.flush_interval)
        spans = self.store.coverage(start, end)
        return start, end, step, downsample(spans, step) if step else spans

    # -- endpoints ---------------------------------------------------------------------
    def status(self, request: Request) -> Response:
        store = self.store
        return Response.json(
            {
                "version": API_VERSION,
                "now": self.clock(),
                "flush_interval": self.flush_interval,
                "last_flush": store.last_flush(),
                "first_flush": store.first_flush(),
                "series": store.series_count,
                "max_series": store.max_series,
                "tiers": [{"step": tier.step, "keep": tier.keep} for tier in store.tiers],
                "path": os.path.abspath(store.path),
                "bytes": file_bytes(store.path),
            }
        )

    def route_table(self, request: Request) -> Response:
        def row(route: str, merged: Mapping[str, Point | None], seconds: float) -> Row | None:
            if merged.get(REQUEST) is None and merged.get(QUERIES) is None:
                return None
            return {**_route_row(route, merged, seconds), **_time_shares(merged)}

        return self.table(request, "routes", self._route_series(), row)

    def table(
        self,
        request: Request,
        key: str,
        groups: Mapping[str, Mapping[str, StoredSeries]],
        row: Callable[[str, Mapping[str, Point | None], float], Row | None],
    ) -> Response:
        """A table of ``groups`` (a route's or a task's series, by metric name) over the
        request's window: each group's series merged, one row per group that ``row`` makes
        one for (None: nothing to show), under ``key``, sorted by the group's name."""
        start, end = self._span(request, DEFAULT_TABLE_WINDOW)
        seconds = total(p.sum or 0 for p in self.store.coverage(start, end))
        points = self.store.points(
            (s.id for members in groups.values() for s in members.values()), start, end
        )
        rows = []
        for group, members in sorted(groups.items()):
            merged = {
                name: merge(points[s.id], end) if points.get(s.id) else None
                for name, s in members.items()
            }
            made = row(group, merged, seconds)
            if made is not None:
                rows.append(made)
        return Response.json({"start": start, "end": end, "seconds": seconds, key: rows})

    def route_charts(self, request: Request) -> Response:
        route = request.param("route")
        if route is None:
            raise BadRequest("name a route: /api/route?route=...")
        start, end, step, axis = self._axis(request, DEFAULT_WINDOW)
        members = self._route_series().get(route, {})
        points = self.store.points((s.id for s in members.values()), start, end)
        lines: dict[str, list[float | None]] = {}
        for name, stats, key in (
            (REQUEST, ("rate", "p50", "p95", "p99", "mean", "count"), "latency"),
            (ERRORS, ("rate",), "errors"),
            (VIEW, ("p50", "p95", "p99", "mean"), "view"),
            (QUERIES, ("p50", "p95", "mean", "max"), "queries"),
            (DUPLICATES, ("p95", "mean", "max"), "duplicates"),
            (DB_TIME, ("p50", "p95", "mean"), "db_time"),
        ):
            series = members.get(name)
            found = points.get(series.id, []) if series is not None else []
            for stat, values in aligned(axis, found, step, stats).items():
                lines[f"{key}.{stat}"] = values
        lines.update(_breakdown_lines(axis, step, members, points, lines["latency.count"]))
        return Response.json(
            {"route": route, "step": step, "t": [p.ts for p in axis], "lines": lines}
        )

    def statements(self, request: Request) -> Response:
        route = request.param("route")
        if route is None:
            raise BadRequest("name a route: /api/statements?route=...")
        start, end = self._span(request, DEFAULT_TABLE_WINDOW)
        found = [
            s
            for s in self.store.list_series(RECEIVED)
            if s.name == STATEMENT_REPEATS and s.tags.get(ROUTE_TAG) == route
        ]
        points = self.store.points((s.id for s in found), start, end)
        rows = statement_rows(((s.tags, points.get(s.id, [])) for s in found), end)
        return Response.json({"route": route, "start": start, "end": end, "statements": rows})

    def metrics(self, request: Request) -> Response:
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for series in self.store.list_series(RECEIVED):
            entry = found.setdefault(
                (series.name, series.type),
                {"name": series.name, "type": series.type, "series": 0, "tags": {}, "sources": []},
            )
            entry["series"] += 1
            for key, value in series.tags.items():
                values = entry["tags"].setdefault(key, [])
                if value not in values and len(values) < MAX_TAG_VALUES:
                    values.append(value)
            if series.source and series.source not in entry["sources"]:
                entry["sources"].append(series.source)
        metrics = [found[key] for key in sorted(found)]
        for entry in metrics:
            entry["stats"] = list(STATS_BY_TYPE.get(entry["type"], ()))
            entry["tags"] = {key: sorted(values) for key, values in sorted(entry["tags"].items())}
            entry["sources"].sort()
        return Response.json({"metrics": metrics})

    def series(self, request: Request) -> Response:
        name = request.param("name")
        if not name:
            raise BadRequest("name a metric: /api/series?name=...")
        wanted_tags = _tag_filters(request.query.get("tag", []))
        kind = request.param("type")
        matching = [
            s
            for s in self.store.list_series(RECEIVED)
            if s.name == name
            and (kind is None or s.type == kind)
            and all(s.tags.get(key) == value for key, value in wanted_tags.items())
        ]
        types = {s.type for s in matching}
        if len(types) > 1:
            raise BadRequest(f"{name!r} has several types {sorted(types)}: add type=...")
        kind = types.pop() if types else kind
        allowed = STATS_BY_TYPE.get(kind or "", ())
        stat = request.param("stat") or (allowed[0] if allowed else "")
        if matching and stat not in allowed:
            raise BadRequest(f"stat must be one of {', '.join(allowed)} for a {kind}")
        start, end, step, axis = self._axis(request, DEFAULT_WINDOW)
        points = self.store.points((s.id for s in matching), start, end)
        ranked = sorted(matching, key=lambda s: -_activity(points.get(s.id, [])))
        lines = [
            {
                "label": _label(s),
                "tags": dict(s.tags),
                "source": s.source,
                "values": aligned(axis, points.get(s.id, []), step, (stat,))[stat],
            }
            for s in ranked[:MAX_LINES]
        ]
        return Response.json(
            {
                "name": name,
                "type": kind,
                "stat": stat,
                "step": step,
                "t": [p.ts for p in axis],
                "lines": lines,
                "more": max(0, len(ranked) - MAX_LINES),
            }
        )

    def health(self, request: Request) -> Response:
        start, end, step, axis = self._axis(request, DEFAULT_WINDOW)
        return Response.json(pipeline_health(self.store, start, end, step, axis))

    # -- helpers -----------------------------------------------------------------------
    def _route_series(self) -> dict[str, dict[str, StoredSeries]]:
        by_route: dict[str, dict[str, StoredSeries]] = {}
        for series in self.store.list_series(ROUTE):
            route = series.tags.get(ROUTE_TAG)
            if route is not None:
                by_route.setdefault(route, {})[summary_key(series.name, series.tags)] = series
        return by_route


def _route_row(route: str, merged: Mapping[str, Point | None], seconds: float) -> dict[str, Any]:
    request, errors = merged.get(REQUEST), merged.get(ERRORS)
    requests = request.count or 0 if request is not None else 0
    failed = errors.sum or 0 if errors is not None else 0
    return {
        "route": route,
        "requests": requests,
        "rate": requests / seconds if seconds > 0 else None,
        "errors": failed,
        "error_ratio": failed / requests if requests else None,
        "latency": _summary(request, ("p50", "p95", "p99", "mean", "max")),
        "view": _summary(merged.get(VIEW), ("p50", "p95", "mean")),
        "queries": _summary(merged.get(QUERIES), ("p50", "p95", "mean", "max")),
        "duplicates": _summary(merged.get(DUPLICATES), ("p95", "mean", "max")),
        "db_time": _summary(merged.get(DB_TIME), ("p95", "mean")),
    }


def _time_shares(merged: Mapping[str, Point | None]) -> dict[str, Any]:
    """Return where a route's time went: seconds per component, and the largest share."""
    spent = {}
    for component in COMPONENTS:
        point = merged.get(f"{BREAKDOWN}#{component}")
        if point is not None and point.sum:
            spent[component] = point.sum
    whole = total(spent.values())
    if not spent or not whole > 0:
        return {"breakdown": spent, "dominant": None}
    top = max(spent, key=lambda component: spent[component])
    return {"breakdown": spent, "dominant": {"component": top, "share": spent[top] / whole}}


def _breakdown_lines(
    axis: Sequence[Point],
    step: float,
    members: Mapping[str, StoredSeries],
    points: Mapping[int, list[Point]],
    requests: Sequence[float | None],
) -> dict[str, list[float | None]]:
    """Return each component's seconds per request at every time (they stack to the mean)."""
    lines = {}
    for component in COMPONENTS:
        series = members.get(f"{BREAKDOWN}#{component}")
        found = points.get(series.id, []) if series is not None else []
        sums = aligned(axis, found, step, ("sum",))["sum"]
        lines[f"breakdown.{component}"] = [
            (spent or 0.0) / count if count else None
            for spent, count in zip(sums, requests, strict=True)
        ]
    return lines


def _activity(points: Sequence[Point]) -> float:
    return total(abs(p.count if p.count is not None else p.sum or 0) for p in points)


def _label(series: StoredSeries) -> str:
    parts = [f"{key}={value}" for key, value in sorted(series.tags.items())]
    if series.source:
        parts.append(f"source={series.source}")
    return ", ".join(parts) or "(no tags)"


def _tag_filters(specs: Iterable[str]) -> dict[str, str]:
    wanted = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise BadRequest(f"tag filters are KEY=VALUE, not {spec[:100]!r}")
        wanted[key] = value
    return wanted


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    text = request.param(name)
    if text is None:
        return default
    # Plain decimal ASCII only: float() would also take '٣', '1_0', 'nan' and 'inf'.
    if len(text) > 40 or _DECIMAL.fullmatch(text) is None:
        raise BadRequest(f"{name} must be a number of seconds, not {text[:40]!r}")
    value = float(text)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low:g} and {high:g}")
    return value
