"""Route summaries: one series per route and metric, pooled across tags and sources.

The frameworks record ``http.server.request.duration`` per route, method, status code,
error type and process. The dashboard's table and charts are per route, so at every flush
the values of all the series of one route are pooled into one summary per metric, whose
percentiles are exact for that flush (computed from every value, like the aggregator's).
``http.server.request.breakdown`` is pooled per route and ``component``: where the
route's time went. Pure computation, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zibrato.aggregation import Series, SeriesType, quantile
from zibrato.backends.dashboard.downsampling import total

ROUTE_TAG = "http.route"
REQUEST = "http.server.request.duration"
VIEW = "http.server.view.duration"
QUERIES = "db.client.request.queries"
DUPLICATES = "db.client.request.duplicates"
DB_TIME = "db.client.request.duration"
BREAKDOWN = "http.server.request.breakdown"
COMPONENT_TAG = "component"
# The components in the order the page stacks them, bottom first ("app": the rest).
COMPONENTS = ("db", "http.client", "cache", "template", "app")
# Derived: requests that failed (a 5xx status or an ``error.type`` tag), a counter.
ERRORS = "http.server.request.errors"
POOLED = (REQUEST, VIEW, QUERIES, DUPLICATES, DB_TIME, BREAKDOWN)
ROUTE_METRICS = (*POOLED, ERRORS)
SUMMARY_PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True, slots=True)
class RouteSummary:
    """One metric of one route over one flush (of one component, for the breakdown)."""

    route: str
    name: str
    type: str
    stats: dict[str, float]
    component: str | None = None

    @property
    def tags(self) -> dict[str, str]:
        """The tags the summary is stored under."""
        if self.component is None:
            return {ROUTE_TAG: self.route}
        return {ROUTE_TAG: self.route, COMPONENT_TAG: self.component}


def summary_key(name: str, tags: Mapping[str, str]) -> str:
    """Return the key of a stored summary among its route's: its name, and its component."""
    component = tags.get(COMPONENT_TAG)
    return name if component is None else f"{name}#{component}"


def is_error(series: Series) -> bool:
    """Return whether a request series counts failed requests (5xx or an error type)."""
    status = series.tags.get("http.response.status_code", "")
    return status.startswith("5") or "error.type" in series.tags


def summarize_routes(series: Iterable[Series]) -> list[RouteSummary]:
    """Return the route summaries of one rollup's series (routes with requests or DB data)."""
    parts: dict[tuple[str, str, str | None], list[Series]] = {}
    errors: dict[str, float] = {}
    for one in series:
        route = one.tags.get(ROUTE_TAG)
        if (
            route is None
            or one.name not in POOLED
            or one.type == SeriesType.COUNTER
            or not one.values
        ):
            continue
        component = one.tags.get(COMPONENT_TAG) if one.name == BREAKDOWN else None
        if one.name == BREAKDOWN and component is None:
            continue
        parts.setdefault((route, one.name, component), []).append(one)
        if one.name == REQUEST:
            failed = one.stats["count"] if is_error(one) else 0
            errors[route] = errors.get(route, 0) + failed
    summaries = [
        RouteSummary(route, name, members[0].type, pooled_stats(members), component)
        for (route, name, component), members in parts.items()
    ]
    for route, failed in errors.items():
        summaries.append(RouteSummary(route, ERRORS, SeriesType.COUNTER, {"sum": failed}))
    return summaries


def pooled_stats(members: Sequence[Series]) -> dict[str, float]:
    """Return count, sum, min, max and percentiles of the values of ``members`` together.

    When the aggregator kept only a sample of a busy series, each kept value stands for
    ``count / len(values)`` values, so a sampled series weighs what it really counted.
    """
    stats: dict[str, float] = {
        "count": sum(s.stats["count"] for s in members),
        "sum": total(s.stats["sum"] for s in members),
        "min": min(s.stats["min"] for s in members),
        "max": max(s.stats["max"] for s in members),
    }
    if all(s.stats["count"] == len(s.values) for s in members):
        ordered = sorted(v for s in members for v in s.values)
        for pct in SUMMARY_PERCENTILES:
            stats[f"p{pct}"] = quantile(ordered, pct)
    else:
        weighted = sorted(
            (value, s.stats["count"] / len(s.values)) for s in members for value in s.values
        )
        for pct in SUMMARY_PERCENTILES:
            stats[f"p{pct}"] = weighted_quantile(weighted, pct)
    return stats


def weighted_quantile(weighted: Sequence[tuple[float, float]], pct: float) -> float:
    """Return the ``pct`` percentile of sorted ``(value, weight)`` pairs.

    A value of weight ``w`` counts as ``w`` equal values, so with whole weights this is
    :func:`zibrato.aggregation.quantile` of the list with every value repeated.

    >>> weighted_quantile([(1.0, 3), (2.0, 1)], 50)   # the median of 1, 1, 1, 2
    1.0
    """
    weights = total(weight for _, weight in weighted)
    position = max(weights - 1, 0.0) * pct / 100
    start = 0.0  # the rank of the first copy of the current value
    for index, (value, weight) in enumerate(weighted):
        last_rank = start + weight - 1
        if position <= last_rank or index == len(weighted) - 1:
            return value
        if position < start + weight:  # between this value's last copy and the next value
            following = weighted[index + 1][0]
            return value + (following - value) * (position - last_rank)
        start += weight
    raise ValueError("no values")
