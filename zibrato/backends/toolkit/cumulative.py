"""Running totals per series, for targets that take cumulative values (OTLP, remote write).

A rollup holds what one interval saw; a cumulative target wants each series' total since
a start time, sent again at every flush: counters add up their interval sums, histograms
their bucket counts, ``count`` and ``sum`` (``min`` and ``max`` over the whole run); a
gauge (or a set's number of distinct members) keeps its last value. Pure computation:
the caller passes the times.

A series updated by several rollup series (two zibrato names that a target spells the
same) merges them the same way. Its **run** starts at the start of the interval that
first gave it a value; a new run (a reset: a new start time, totals from zero) begins
when the series comes back after going quiet for ``ttl`` seconds (it is then forgotten,
:meth:`CumulativeStore.expire`), and when an integer total would pass what a signed 64-bit
integer holds. At most ``max_series`` series are kept, besides ``HEALTH_SERIES_RESERVE``
health series (``zibrato.*``) that ordinary ones never push out; beyond, the least
recently updated are dropped and counted in ``evicted``. ``on_forget(key)`` is told of
every series dropped either way.

Bucket counts are integers. One interval's counts are its ``count`` rounded to the
nearest integer (halves up), shared out over the buckets in proportion to the values
kept, by largest remainder, so they always add up to that count. That is exact when
every value was kept; when the aggregator sampled a busy series (``max_values``), the
shares come from the uniform sample (``count`` and ``sum`` stay exact); when the client
sampled (``rate=``), each value counts ``1 / rate`` times, and a fractional interval
count is rounded.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from zibrato.aggregation import HEALTH_PREFIX, HEALTH_SERIES_RESERVE, Series, SeriesType

K = TypeVar("K", bound=Hashable)

INT64_MAX = 2**63 - 1
DEFAULT_TTL = 600.0  # seconds a series may go without an update before it is forgotten


def interval_buckets(values: Sequence[float], count: float, bounds: Sequence[float]) -> list[int]:
    """Return one interval's integer count per bucket (``len(bounds) + 1``, the last above
    every bound), adding up to ``count`` rounded; bucket ``i`` holds ``bounds[i-1] < v <=
    bounds[i]``.

    >>> interval_buckets([0.5, 1.0, 3.0], 3, [1.0, 2.0])
    [2, 0, 1]
    >>> interval_buckets([1.0, 3.0], 5, [2.0])  # 2 values kept of 5 (sampled)
    [3, 2]
    """
    total = math.floor(count + 0.5)
    kept = [0] * (len(bounds) + 1)
    for value in values:  # values are sorted, but one bisect each is simplest and exact
        kept[bisect.bisect_left(bounds, value)] += 1
    if not values:
        return kept
    if total == len(values):
        return kept
    shares = [total * n / len(values) for n in kept]
    counts = [math.floor(share) for share in shares]
    short = total - sum(counts)
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[:short]:
        counts[i] += 1
    return counts


@dataclass(slots=True)
class Histogram:
    """A cumulative histogram: per-bucket counts (not cumulative across buckets)."""

    bounds: tuple[float, ...]
    counts: list[int]
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def add(self, series: Series) -> None:
        """Add one interval of a timer or distribution."""
        stats = series.stats
        added = interval_buckets(series.values, stats["count"], self.bounds)
        self.counts = [a + b for a, b in zip(self.counts, added, strict=True)]
        self.count += sum(added)
        self.sum += stats["sum"]
        self.min = min(self.min, stats["min"])
        self.max = max(self.max, stats["max"])


@dataclass(slots=True)
class Run:
    """One series' values since ``start`` (wall-clock seconds), last changed at ``updated``."""

    type: str
    start: float
    updated: float
    value: float = 0  # a counter's total, a gauge's last value
    histogram: Histogram | None = None


class CumulativeStore(Generic[K]):
    """The runs of every series a cumulative target is told about, by a key of the caller's.

    >>> store = CumulativeStore(buckets=lambda series: (1.0,))
    >>> hits = Series("hits", "counter", None, {}, {"sum": 2, "rate": 0.2})
    >>> store.update("hits", hits, start=0.0, now=10.0).value
    2
    >>> store.update("hits", hits, start=10.0, now=20.0).value
    4
    """

    def __init__(
        self,
        *,
        buckets: Callable[[Series], tuple[float, ...]],
        ttl: float = DEFAULT_TTL,
        max_series: int = 10_000,
        on_forget: Callable[[K], None] | None = None,
    ) -> None:
        self.buckets = buckets
        self.on_forget = on_forget
        self.ttl = ttl
        self.max_series = max_series
        self.evicted = 0
        self._runs: dict[K, Run] = {}
        # Least recently updated first; health series apart, never evicted for others.
        self._recency: OrderedDict[K, None] = OrderedDict()
        self._health_recency: OrderedDict[K, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[tuple[K, Run]]:
        return iter(list(self._runs.items()))

    def get(self, key: K) -> Run | None:
        return self._runs.get(key)

    def update(self, key: K, series: Series, *, start: float, now: float) -> Run:
        """Fold one interval of ``series`` (which began at ``start``) into its run."""
        run = self._runs.get(key)
        if run is None or run.type != series.type or self._overflows(run, series):
            run = self._runs[key] = Run(series.type, start, now)
        run.updated = now
        if series.type == SeriesType.COUNTER:
            run.value += series.stats["sum"]
        elif series.type in (SeriesType.GAUGE, SeriesType.SET):
            run.value = series.stats["value"]
        else:
            if run.histogram is None:
                bounds = self.buckets(series)
                run.histogram = Histogram(bounds, [0] * (len(bounds) + 1))
            run.histogram.add(series)
        recency = self._health_recency if series.name.startswith(HEALTH_PREFIX) else self._recency
        recency[key] = None
        recency.move_to_end(key)
        self._trim(self._recency, self.max_series)
        self._trim(self._health_recency, HEALTH_SERIES_RESERVE)
        return run

    def expire(self, now: float) -> list[tuple[K, Run]]:
        """Forget the series not updated for ``ttl`` seconds; return them."""
        gone = [(key, run) for key, run in self._runs.items() if now - run.updated > self.ttl]
        for key, _ in gone:
            del self._runs[key]
            self._recency.pop(key, None)
            self._health_recency.pop(key, None)
            if self.on_forget is not None:
                self.on_forget(key)
        return gone

    @staticmethod
    def _overflows(run: Run, series: Series) -> bool:
        """Whether an integer counter's total would pass a signed 64-bit integer."""
        if series.type != SeriesType.COUNTER:
            return False
        total = run.value + series.stats["sum"]
        return type(total) is int and abs(total) > INT64_MAX

    def _trim(self, recency: OrderedDict[K, None], limit: int) -> None:
        while len(recency) > limit:
            key, _ = recency.popitem(last=False)
            del self._runs[key]
            self.evicted += 1
            if self.on_forget is not None:
                self.on_forget(key)
