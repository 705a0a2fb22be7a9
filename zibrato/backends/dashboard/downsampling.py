"""Points and their downsampling: pure computation, no I/O (in the style of aggregation.py).

A :class:`Point` summarises one series over one span of time that ends at ``ts``: one
flush interval, or a 1-minute or 10-minute bucket made by merging the points inside it.
It holds the fields of its type, the others are None:

* counter: ``sum``;
* gauge, set (its number of distinct members): ``last``, ``min``, ``max``;
* timer, distribution: ``count``, ``sum``, ``min``, ``max`` and the percentiles ``p50``,
  ``p90``, ``p95``, ``p99``.

:func:`merge` keeps ``count``, ``sum``, ``min``, ``max`` and ``last`` exact. Percentiles
cannot be merged exactly without the values, which are long gone; a merged percentile is
the **count-weighted mean** of the merged points' percentiles. It tracks the true
percentile of all the values when the traffic was steady (within a few per cent for
spans of a few thousand values), it always lies between the smallest and the largest
merged percentile, and it is associative: merging 1-minute buckets into 10-minute buckets
gives what merging every flush point at once would (the weights are the counts), so the
tiers of the history agree with each other. A short spike shows in ``max`` at once but
is diluted in a merged ``p99`` by the quiet spans around it.

:func:`aligned` puts a series' points on a chart's time axis, one statistic at a time
(:func:`statistic`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zibrato.aggregation import SeriesType

PERCENTILES = ("p50", "p90", "p95", "p99")
FIELDS = ("count", "sum", "min", "max", "last", *PERCENTILES)
ZERO_FILLED = frozenset({"rate", "sum", "count"})  # no point in a span: nothing happened


@dataclass(frozen=True, slots=True)
class Point:
    """One series over the span of time that ends at ``ts`` (seconds since the epoch)."""

    ts: float
    count: float | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    last: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None

    def values(self) -> tuple[float | None, ...]:
        """Return the fields in :data:`FIELDS` order."""
        return tuple(getattr(self, name) for name in FIELDS)

    @property
    def mean(self) -> float | None:
        """The mean of a timer's or distribution's values."""
        if self.count and self.sum is not None:
            return self.sum / self.count
        return None


@dataclass(frozen=True, slots=True)
class Tier:
    """One resolution of the history: points ``step`` seconds apart (0: one per flush),
    kept until they are ``keep`` seconds old, then merged into the next tier (or dropped)."""

    step: float
    keep: float


def total(values: Iterable[float]) -> float:
    """Return the exact sum of ``values``, or infinity when it overflows a float.

    ``math.fsum`` raises on an overflow; a peer that sends huge values must cost only
    the statistic that overflowed (it becomes None), never a flush or a compaction.
    """
    items = list(values)
    try:
        return math.fsum(items)
    except OverflowError:
        return (
            math.inf if sum(1 if v > 0 else -1 for v in items if abs(v) > 1e300) >= 0 else -math.inf
        )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def point_from_stats(kind: str, stats: Mapping[str, float], ts: float) -> Point:
    """Return the point of one rollup series (non-finite statistics become None)."""
    if kind == SeriesType.COUNTER:
        return Point(ts, sum=_finite(stats.get("sum")))
    if kind == SeriesType.GAUGE or "value" in stats:  # a gauge, or a set's distinct members
        value = _finite(stats.get("value"))
        return Point(ts, last=value, min=value, max=value)
    return Point(
        ts,
        count=stats.get("count"),
        sum=_finite(stats.get("sum")),
        min=_finite(stats.get("min")),
        max=_finite(stats.get("max")),
        p50=_finite(stats.get("median", stats.get("p50"))),
        p90=_finite(stats.get("p90")),
        p95=_finite(stats.get("p95")),
        p99=_finite(stats.get("p99")),
    )


def merge(points: Sequence[Point], ts: float) -> Point:
    """Return one point that stands for all of ``points``, stamped ``ts``.

    >>> merge([Point(10, count=1, p99=0.1), Point(20, count=3, p99=0.5)], 60).p99
    0.4
    """
    counts = [p.count for p in points if p.count is not None]
    sums = [p.sum for p in points if p.sum is not None]
    lows = [p.min for p in points if p.min is not None]
    highs = [p.max for p in points if p.max is not None]
    lasts = [p for p in points if p.last is not None]
    merged: dict[str, float | None] = {
        "count": sum(counts) if counts else None,
        "sum": _finite(total(sums)) if sums else None,
        "min": min(lows) if lows else None,
        "max": max(highs) if highs else None,
        "last": max(lasts, key=lambda p: p.ts).last if lasts else None,
    }
    for name in PERCENTILES:
        weighted = [
            (p.count, value) for p in points if (value := getattr(p, name)) is not None and p.count
        ]
        weight = sum(count for count, _ in weighted)
        merged[name] = (
            _finite(total(count * value for count, value in weighted) / weight) if weight else None
        )
    return Point(ts, **merged)


def bucket_end(ts: float, step: float) -> float:
    """Return the end of the ``step``-second bucket that ``ts`` falls in.

    A point stamped exactly on a boundary ends that bucket: points are stamped at the
    end of the span they cover.

    >>> bucket_end(60.0, 60), bucket_end(60.5, 60)
    (60.0, 120.0)
    """
    return math.ceil(ts / step) * step


def downsample(points: Iterable[Point], step: float) -> list[Point]:
    """Merge ``points`` into ``step``-second buckets; return one point per bucket, in order."""
    buckets: dict[float, list[Point]] = {}
    for point in points:
        buckets.setdefault(bucket_end(point.ts, step), []).append(point)
    return [merge(members, end) for end, members in sorted(buckets.items())]


def compaction_cutoff(now: float, tier: Tier, following: Tier | None) -> float:
    """Return the time up to which ``tier``'s points leave it (``ts <= cutoff``).

    Points past their ``keep`` leave. When they move on to a ``following`` tier, the
    cutoff is rounded down to its step, so that a bucket is never built from half its
    points; from the last tier they leave a whole bucket at a time.
    """
    cutoff = now - tier.keep
    step = following.step if following is not None else tier.step
    return math.floor(cutoff / step) * step if step else cutoff


def statistic(point: Point | None, stat: str, seconds: float) -> float | None:
    """Return one statistic of a point (None when it has none; 0 for a count without a point)."""
    if point is None:
        return 0 if stat in ZERO_FILLED else None
    if stat == "rate":
        amount = point.count if point.count is not None else point.sum
        return amount / seconds if amount is not None and seconds > 0 else None
    if stat == "mean":
        return point.mean
    value: float | None = getattr(point, stat)
    return value


def aligned(
    axis: Sequence[Point],
    points: Iterable[Point],
    step: float,
    stats: Sequence[str],
    *,
    pooled: bool = False,
) -> dict[str, list[float | None]]:
    """Return each of ``stats`` at every time of ``axis`` (merging per step, or per time
    when ``pooled`` points of several series share one time)."""
    if step:
        merged = downsample(points, step)
    elif pooled:
        by_ts: dict[float, list[Point]] = {}
        for point in points:
            by_ts.setdefault(point.ts, []).append(point)
        merged = [merge(group, ts) for ts, group in by_ts.items()]
    else:
        merged = list(points)
    at = {point.ts: point for point in merged}
    return {
        stat: [statistic(at.get(span.ts), stat, span.sum or 0) for span in axis] for stat in stats
    }
