"""Merge the rollups of two consecutive intervals into one: pure computation, no I/O.

A target that keeps one point per timestamp (Graphite's whisper keeps the last write)
loses a point when two rollups land on the same timestamp. Merging the later rollup into
the earlier one, and sending the result again under the earlier timestamp, overwrites
that point with a superset of itself, so nothing is lost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from zibrato.aggregation import (
    Rollup,
    Series,
    SeriesType,
    distribution_stats,
    percentile_key,
    quantile,
)

_SeriesKey = tuple[str, str, "str | None", tuple[tuple[str, str], ...]]


def merge_rollups(earlier: Rollup, later: Rollup, percentiles: Sequence[float]) -> Rollup:
    """Return one rollup covering both intervals, stamped with ``earlier.timestamp``.

    Counters add up (``rate`` over both intervals); a gauge keeps the later value;
    timers and distributions pool their values: exact when neither was sampled, else
    the moments stay exact and the percentiles come from one sample at the lower of the
    two sampling rates.

    >>> a = Rollup(10.0, 10.0, (Series("hits", "counter", None, {}, {"sum": 4, "rate": 0.4}),))
    >>> b = Rollup(13.0, 3.0, (Series("hits", "counter", None, {}, {"sum": 1, "rate": 1/3}),))
    >>> dict(merge_rollups(a, b, (90,)).series[0].stats)
    {'sum': 5, 'rate': 0.38461538461538464}
    """
    interval = earlier.interval + later.interval
    merged: dict[_SeriesKey, Series] = {series.key(): series for series in earlier.series}
    for series in later.series:
        key = series.key()
        before = merged.get(key)
        merged[key] = series if before is None else merge_series(before, series, percentiles)
    return Rollup(
        earlier.timestamp,
        interval,
        tuple(_with_rate(series, interval) for series in merged.values()),
    )


def merge_series(earlier: Series, later: Series, percentiles: Sequence[float]) -> Series:
    """Return the series of both intervals (same key); a counter's ``rate`` is left to fix."""
    if later.type == SeriesType.GAUGE:
        return later
    if later.type == SeriesType.COUNTER:
        stats = {"sum": earlier.stats["sum"] + later.stats["sum"], "rate": 0.0}
        return Series(later.name, later.type, later.source, later.tags, stats)
    if later.type == SeriesType.SET:  # the members are not kept: at least the larger distinct count
        stats = {"value": max(earlier.stats["value"], later.stats["value"])}
        return Series(later.name, later.type, later.source, later.tags, stats)
    values = sorted((*earlier.values, *later.values))
    count = earlier.stats["count"] + later.stats["count"]
    if count == len(values):
        stats = distribution_stats(values, percentiles)
    else:
        values = _common_rate_sample(earlier, later)
        stats = _pooled_stats(earlier.stats, later.stats, values, percentiles)
    return Series(later.name, later.type, later.source, later.tags, stats, values)


def _common_rate_sample(earlier: Series, later: Series) -> list[float]:
    """Pool two samples taken at different rates into one at the lower rate (sorted).

    Pooling them as they are would over-weight the interval that was sampled less.
    """
    rates = [len(s.values) / s.stats["count"] for s in (earlier, later) if s.values]
    if not rates:
        return []
    rate = min(rates)
    pooled: list[float] = []
    for series in (earlier, later):
        ordered = sorted(series.values)
        keep = min(len(ordered), max(1, round(rate * series.stats["count"])))
        # Evenly spaced ranks of a sorted sample: a smaller sample of the same distribution.
        pooled.extend(ordered[int((i + 0.5) * len(ordered) / keep)] for i in range(keep))
    return sorted(pooled)


def _pooled_stats(
    earlier: Mapping[str, float],
    later: Mapping[str, float],
    values: Sequence[float],
    percentiles: Sequence[float],
) -> dict[str, float]:
    """Exact moments from both intervals' stats; ranks from the pooled (sampled) values."""
    count = earlier["count"] + later["count"]
    total = earlier["sum"] + later["sum"]
    sum_squares = _sum_squares(earlier) + _sum_squares(later)
    mean = total / count
    stats = {
        "count": count,
        "sum": total,
        "min": min(earlier["min"], later["min"]),
        "max": max(earlier["max"], later["max"]),
        "mean": mean,
        "median": math.nan,  # filled in below, kept in the aggregator's order
        "stddev": math.sqrt(max(0.0, sum_squares / count - mean * mean)),
        "sum_squares": sum_squares,
    }
    ranks = {"median": 50.0, **{percentile_key(pct): pct for pct in percentiles}}
    for key, pct in ranks.items():
        # No values at all (never from the aggregator): keep the later interval's figure.
        stats[key] = quantile(values, pct) if values else later.get(key, math.nan)
    return stats


def _sum_squares(stats: Mapping[str, float]) -> float:
    """The sum of squares, derived from the mean and stddev when a producer left it out."""
    if "sum_squares" in stats:
        return stats["sum_squares"]
    return stats["count"] * (stats["stddev"] ** 2 + stats["mean"] ** 2)


def _with_rate(series: Series, interval: float) -> Series:
    if series.type != SeriesType.COUNTER:
        return series
    stats = {"sum": series.stats["sum"], "rate": series.stats["sum"] / interval}
    return Series(series.name, series.type, series.source, series.tags, stats)
