"""Aggregate events into per-interval rollups: pure computation, no I/O.

Per series (type + name + source + tags), across every publishing process:
counters give ``sum`` and ``rate`` (per second); gauges give the last ``value`` with
deltas applied (and remember it across intervals, so a later delta moves it);
timers and distributions give ``count``, ``sum``, ``min``, ``max``, ``mean``,
``median``, ``stddev`` (population) and the configured percentiles (linear
interpolation between closest ranks, as ``statistics.quantiles(method="inclusive")``),
exact from every value; sets give ``value``, the number of distinct members.

An event the client sampled (a sixth field, ``rate``) stands for ``1 / rate`` events: a
counter adds ``value / rate``; a timer or distribution keeps its value once but counts it
``1 / rate`` times in ``count``, ``sum`` and ``stddev`` (so ``count`` exceeds the number of
values kept, as when the aggregator samples itself); gauges and sets ignore the rate.

Memory grows with series, not events: series are capped (overflow counted), and a
timer keeps at most ``max_values`` values per interval, and all timers together at most
``MAX_KEPT_VALUES``; beyond that its count, sum, min, max and stddev stay exact and its
percentiles come from a uniform sample. Series named ``zibrato.*`` (health reports, such
as ``zibrato.publisher.dropped``) have a reserve of their own, ``HEALTH_SERIES_RESERVE``,
beyond the cap, so a flood of series cannot hide the report of it.

Nothing an event holds can raise out of :meth:`Aggregator.add_events`: an event that
fails in an unexpected way is skipped and counted (``invalid_event``). Statistics whose
exact value lies beyond the float range (the sum of two timers of 1e308 s) are ``inf``;
the others (count, min, max, mean, median, stddev, percentiles) stay exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from zibrato import protocol
from zibrato.protocol import Batch

DEFAULT_PERCENTILES: tuple[float, ...] = (90, 95, 99)
DEFAULT_MAX_SERIES = 10_000
DEFAULT_MAX_VALUES = 100_000
DEFAULT_MAX_SET_MEMBERS = 10_000
# Values kept per interval across all timers and distributions (about 32 MB of floats).
MAX_KEPT_VALUES = 1_000_000
HEALTH_PREFIX = "zibrato."
# Health series admitted beyond ``max_series``: publishers' drop reports, backends' own.
HEALTH_SERIES_RESERVE = 1_000


class SeriesType(StrEnum):
    """What a series of a rollup is, as backends render it (events of several wire kinds
    may make one type: a gauge and its deltas are one ``gauge`` series)."""

    COUNTER = "counter"
    GAUGE = "gauge"
    TIMER = "timer"
    DISTRIBUTION = "distribution"
    SET = "set"


# The series type of each wire kind, for a value list.
_SERIES_TYPES: dict[int, SeriesType] = {
    protocol.COUNTER: SeriesType.COUNTER,
    protocol.GAUGE: SeriesType.GAUGE,
    protocol.GAUGE_DELTA: SeriesType.GAUGE,
    protocol.TIMER: SeriesType.TIMER,
    protocol.DISTRIBUTION: SeriesType.DISTRIBUTION,
    protocol.SET: SeriesType.SET,
}
# The hot loop of Aggregator.add reads these as globals rather than enum attributes.
_COUNTER, _GAUGE, _TIMER = SeriesType.COUNTER, SeriesType.GAUGE, SeriesType.TIMER
_DISTRIBUTION, _SET = SeriesType.DISTRIBUTION, SeriesType.SET
_INF = math.inf
# Characters of tag text the cache of valid tag sets may hold (tag sets reach 16 kB each).
_CACHE_CHARS = 4_000_000

TagsKey = tuple[tuple[str, str], ...]
# (type, name, source, publisher tags, event tags); tag order is made canonical at rollup
_RawKey = tuple[str, str, "str | None", "TagsKey", "TagsKey"]


def percentile_key(pct: float) -> str:
    """Return the stats key of a percentile: 90 -> ``p90``, 99.9 -> ``p99_9``."""
    return "p" + f"{pct:g}".replace(".", "_")


@dataclass(frozen=True, slots=True)
class Series:
    """One series of one rollup. ``values`` holds a timer's or distribution's values."""

    name: str
    type: str
    source: str | None
    tags: Mapping[str, str]
    stats: Mapping[str, float]
    values: Sequence[float] = ()

    def key(self) -> tuple[str, str, str | None, TagsKey]:
        """Return a hashable identity of this series (type, name, source, sorted tags)."""
        return (self.type, self.name, self.source, tuple(sorted(self.tags.items())))


@dataclass(frozen=True, slots=True)
class Rollup:
    """What one flush interval produced: every series that saw events in it."""

    timestamp: float
    interval: float
    series: Sequence[Series] = field(default_factory=tuple)


class _Sampled:
    """The values of one timer beyond ``max_values``: exact moments, sampled ranks."""

    __slots__ = ("count", "max", "min", "sum", "sum_squares")

    def __init__(self) -> None:
        self.count: float = 0  # weighted: a client-sampled value counts 1 / rate times
        self.sum = 0.0
        self.sum_squares = 0.0
        self.min = _INF
        self.max = -_INF

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.sum_squares += value * value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def add_weight(self, value: float, weight: float) -> None:
        """Count ``value`` ``weight`` more times (a client-sampled event stands for several)."""
        self.count += weight
        self.sum += value * weight
        self.sum_squares += value * value * weight
        self.min = min(self.min, value)
        self.max = max(self.max, value)


class Aggregator:
    """Fold batches into the current interval; :meth:`rollup` closes the interval.

    >>> agg = Aggregator()
    >>> agg.add_events([(0, "hits", 2, None, None), (0, "hits", 3, None, None)])
    >>> [s.stats["sum"] for s in agg.rollup(now=10.0, interval=1.0).series]
    [5]
    """

    def __init__(
        self,
        *,
        percentiles: Iterable[float] = DEFAULT_PERCENTILES,
        max_series: int = DEFAULT_MAX_SERIES,
        max_values: int = DEFAULT_MAX_VALUES,
        max_set_members: int = DEFAULT_MAX_SET_MEMBERS,
        rng: random.Random | None = None,
    ) -> None:
        self.percentiles = tuple(sorted(set(percentiles)))
        for pct in self.percentiles:
            if not 0 < pct <= 100:
                raise ValueError(f"percentile {pct!r} is not in (0, 100]")
        self.max_series = max_series
        self.max_values = max_values
        self.max_set_members = max_set_members
        self._rng = rng or random.Random()
        # Counted since the last rollup, for the backend's health metrics.
        self.rejected: dict[str, int] = {}
        self.dropped_series = 0
        self.sampled_values = 0
        self.dropped_set_members = 0
        self._good_names: set[str] = set()
        # tags as given -> tags sorted by key, for tag sets already seen valid
        self._good_tags: dict[TagsKey, TagsKey] = {}
        self._good_tags_chars = 0
        self._reset()
        self._gauge_memory: dict[_RawKey, float] = {}

    def _reset(self) -> None:
        self._health_series = 0
        self._kept_values = 0
        self._counters: dict[_RawKey, float] = {}
        self._gauges: dict[_RawKey, float] = {}
        self._values: dict[_RawKey, list[float]] = {}
        self._sampled: dict[_RawKey, _Sampled] = {}
        self._sets: dict[_RawKey, set[str]] = {}

    @property
    def series_count(self) -> int:
        """How many series the current interval holds (health series included)."""
        return len(self._counters) + len(self._gauges) + len(self._values) + len(self._sets)

    # -- folding events in ---------------------------------------------------------
    def add(self, batch: Batch) -> None:
        """Fold every valid event of ``batch`` in; count the invalid ones by reason."""
        batch_tags: TagsKey = ()
        if batch.tags:
            batch_tags = tuple(sorted(batch.tags.items()))
        self.add_events(batch.events, source=batch.source, batch_tags=batch_tags)

    def add_events(
        self,
        events: Iterable[Sequence[Any]],
        *,
        source: str | None = None,
        batch_tags: TagsKey = (),
    ) -> None:
        """Fold raw ``(kind, name, value, source, tags[, rate])`` events in (validating each)."""
        counters, values = self._counters, self._values
        # A timer keeps its values while both its own and the global allowance last.
        room = MAX_KEPT_VALUES - self._kept_values
        max_values = self.max_values
        good_names, good_tags = self._good_names, self._good_tags
        for event in events:
            series_values = None
            try:
                try:
                    kind, name, value, event_source, tags = event
                    weight = 1.0
                except (TypeError, ValueError):
                    if _is_value_list(event):  # a sampled series: one event per value
                        self.add_events(_each_value(event), source=source, batch_tags=batch_tags)
                        continue
                    sampled = self._unpack_sampled(event)
                    if sampled is None:
                        continue
                    kind, name, value, event_source, tags, weight = sampled
                if type(value) is tuple:  # a value list: the values of one series
                    if not (value and _numbers(value) and self._known(name, tags, event_source)):
                        # checked one by one, each counted: the first time, or a bad one
                        self.add_events(_each_value(event), source=source, batch_tags=batch_tags)
                        continue
                    series_values, value = value, value[0]
                if not (
                    type(value) is int or (type(value) is float and -_INF < value < _INF)
                ) and not _text_member(kind, value):
                    self._reject("invalid_value")
                    continue
                try:
                    known = name in good_names
                except TypeError:  # unhashable: a msgpack map or array
                    known = False
                if not known and not self._admit_name(name):
                    continue
                if tags is None:
                    tags_key: TagsKey = ()
                elif type(tags) is dict:
                    try:
                        tags_key = good_tags[tuple(tags.items())]
                    except KeyError:
                        admitted = self._admit_tags(tags)
                        if admitted is None:
                            continue
                        tags_key = admitted
                    except TypeError:  # unhashable tag values
                        self._reject("invalid_tags")
                        continue
                else:
                    self._reject("invalid_tags")
                    continue
                if event_source is None:
                    event_source = source
                elif type(event_source) is not str or protocol.check_name(event_source):
                    self._reject("invalid_source")
                    continue
                if series_values is not None:
                    series_type = _SERIES_TYPES.get(kind) if type(kind) is int else None
                    if series_type is None:
                        self._reject("invalid_kind", len(series_values))
                    else:
                        key = (series_type, name, event_source, batch_tags, tags_key)
                        room = self._add_series(key, kind, series_values, room)
                elif type(kind) is not int:  # 0.0 == 0 and True == 1, but neither is a kind
                    self._reject("invalid_kind")
                elif kind == protocol.COUNTER:
                    key = (_COUNTER, name, event_source, batch_tags, tags_key)
                    try:
                        counters[key] += value
                    except KeyError:
                        if self._admit_series(name):
                            counters[key] = value
                elif kind == protocol.TIMER or kind == protocol.DISTRIBUTION:
                    key = (
                        _TIMER if kind == protocol.TIMER else _DISTRIBUTION,
                        name,
                        event_source,
                        batch_tags,
                        tags_key,
                    )
                    try:
                        kept = values[key]
                    except KeyError:
                        if not self._admit_series(name):
                            continue
                        kept = values[key] = []
                    if len(kept) < max_values and (room > 0 or not kept):
                        kept.append(value)
                        room -= 1
                    else:
                        self._sample(key, kept, value)
                    if weight != 1.0:
                        self._weigh(key, value, weight - 1.0)
                elif kind == protocol.GAUGE or kind == protocol.GAUGE_DELTA:
                    self._gauge((_GAUGE, name, event_source, batch_tags, tags_key), kind, value)
                elif kind == protocol.SET:
                    self._add_member((_SET, name, event_source, batch_tags, tags_key), value)
                else:
                    self._reject("invalid_kind")
            except (TypeError, ValueError):  # something in the event no check foresaw
                self._reject("invalid_event", len(series_values) if series_values else 1)
            except Exception:  # whatever else: this event alone is lost, counted
                self._reject("internal_error", len(series_values) if series_values else 1)
        self._kept_values = MAX_KEPT_VALUES - room

    def _add_series(self, key: _RawKey, kind: int, values: tuple[float, ...], room: int) -> int:
        """Fold one series' values (finite numbers, checked) in at once; return the room
        left for kept values."""
        if kind == protocol.COUNTER:
            counters = self._counters
            if key in counters:
                counters[key] += sum(values)
            elif self._admit_series(key[1]):
                counters[key] = sum(values)
        elif kind == protocol.TIMER or kind == protocol.DISTRIBUTION:
            kept = self._values.get(key)
            if kept is None:
                if not self._admit_series(key[1]):
                    return room
                kept = self._values[key] = []
            fits = max(0, min(len(values), self.max_values - len(kept), room))
            if not kept and not fits:
                fits = 1  # every series keeps one value, as one by one
            kept.extend(values[:fits])
            room -= fits
            for value in values[fits:]:
                self._sample(key, kept, value)
        elif kind == protocol.SET:
            for member in values:
                self._add_member(key, member)
        else:  # gauges: in order
            for value in values:
                self._gauge(key, kind, value)
        return room

    def _unpack_sampled(self, event: Any) -> tuple[Any, ...] | None:
        """Unpack a client-sampled event; return it with a counter's value scaled up and
        its weight (``1 / rate``) last, or None (counted) when it is malformed."""
        try:
            kind, name, value, source, tags, rate = event
        except (TypeError, ValueError):
            self._reject("invalid_event")
            return None
        if not protocol.check_rate(rate):
            self._reject("invalid_rate")
            return None
        if kind == protocol.COUNTER and (type(value) is int or type(value) is float):
            value = value / rate
        return kind, name, value, source, tags, 1.0 / rate

    def _weigh(self, key: _RawKey, value: float, extra: float) -> None:
        weighted = self._sampled.get(key)
        if weighted is None:
            weighted = self._sampled[key] = _Sampled()
        weighted.add_weight(value, extra)

    def _add_member(self, key: _RawKey, member: object) -> None:
        if not protocol.check_member(member):
            self._reject("invalid_value")
            return
        members = self._sets.get(key)
        if members is None:
            if not self._admit_series(key[1]):
                return
            members = self._sets[key] = set()
        # 42 and "42" are one member, as in statsd, where every member is text.
        text = member if type(member) is str else str(member)
        if len(members) < self.max_set_members or text in members:
            members.add(text)
        else:
            self.dropped_set_members += 1

    def _gauge(self, key: _RawKey, kind: int, value: float) -> None:
        gauges = self._gauges
        if key not in gauges and not self._admit_series(key[1]):
            return
        if kind == protocol.GAUGE_DELTA:
            previous = gauges.get(key)
            if previous is None:
                previous = self._gauge_memory.get(key, 0.0)
            value = previous + value
        gauges[key] = value

    def _sample(self, key: _RawKey, kept: list[float], value: float) -> None:
        # Reservoir sampling (algorithm R): every value has the same chance to be kept.
        # ``extra`` holds exactly the values not in ``kept``, so moments stay exact.
        extra = self._sampled.get(key)
        if extra is None:
            extra = self._sampled[key] = _Sampled()
        self.sampled_values += 1
        slot = self._rng.randrange(len(kept) + int(extra.count) + 1)
        if slot < len(kept):
            kept[slot], value = value, kept[slot]
        extra.add(value)

    def _admit_series(self, name: str) -> bool:
        # Health series have a reserve of their own: a flood cannot push them out.
        if name.startswith(HEALTH_PREFIX):
            if self._health_series < HEALTH_SERIES_RESERVE:
                self._health_series += 1
                return True
        elif self.series_count - self._health_series < self.max_series:
            return True
        self.dropped_series += 1
        return False

    def _admit_name(self, name: object) -> bool:
        if protocol.check_name(name):
            self._reject("invalid_name")
            return False
        if len(self._good_names) > 4 * self.max_series:
            self._good_names.clear()  # a flood of distinct names must not grow memory
        self._good_names.add(name)  # type: ignore[arg-type]
        return True

    def _admit_tags(self, tags: dict[Any, Any]) -> TagsKey | None:
        """Validate a tag set not seen before; return it sorted by key, or None."""
        if not protocol.valid_tags(tags):
            self._reject("invalid_tags")
            return None
        size = sum(len(key) + len(value) for key, value in tags.items())
        self._good_tags_chars += size
        if len(self._good_tags) > 4 * self.max_series or self._good_tags_chars > _CACHE_CHARS:
            self._good_tags.clear()  # a flood of distinct (or huge) tag sets: start over
            self._good_tags_chars = size
        canonical = tuple(sorted(tags.items()))
        self._good_tags[tuple(tags.items())] = canonical
        return canonical

    def _reject(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + count

    def _known(self, name: Any, tags: Any, source: Any) -> bool:
        """Whether an event's name, tags and source were all seen valid before."""
        try:
            return (
                name in self._good_names
                and (
                    tags is None or (type(tags) is dict and tuple(tags.items()) in self._good_tags)
                )
                and (source is None or (type(source) is str and not protocol.check_name(source)))
            )
        except TypeError:  # unhashable
            return False

    # -- closing an interval ---------------------------------------------------------
    def take(self) -> _Interval:
        """Detach the current interval's raw state (cheap) and start a new interval."""
        taken = _Interval(self._counters, self._gauges, self._values, self._sampled, self._sets)
        self._gauge_memory.update(self._gauges)
        if len(self._gauge_memory) > self.max_series:
            for stale in list(self._gauge_memory)[: len(self._gauge_memory) - self.max_series]:
                del self._gauge_memory[stale]
        self._reset()
        return taken

    def rollup(self, now: float, interval: float) -> Rollup:
        """Close the interval and return its rollup (``take`` then ``summarize``)."""
        return summarize(self.take(), now, interval, self.percentiles)


@dataclass(slots=True)
class _Interval:
    counters: dict[_RawKey, float]
    gauges: dict[_RawKey, float]
    values: dict[_RawKey, list[float]]
    sampled: dict[_RawKey, _Sampled]
    sets: dict[_RawKey, set[str]] = field(default_factory=dict)


def _text_member(kind: object, value: object) -> bool:
    """Return whether ``value`` may be a set member that is not a number (a str)."""
    return kind == protocol.SET and type(value) is str


def _canonical(key: _RawKey) -> tuple[str, str, str | None, TagsKey]:
    kind, name, source, batch_tags, event_tags = key
    if event_tags:
        merged = dict(batch_tags)
        merged.update(event_tags)
        return kind, name, source, tuple(sorted(merged.items()))
    return kind, name, source, batch_tags


def summarize(
    interval_state: _Interval,
    now: float,
    interval: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> Rollup:
    """Compute the statistics of a detached interval (CPU work, outside any lock)."""
    series: list[Series] = []
    counters: dict[tuple[str, str, str | None, TagsKey], float] = {}
    for raw, total in interval_state.counters.items():
        key = _canonical(raw)
        counters[key] = counters.get(key, 0) + total
    for (kind, name, source, tags), total in counters.items():
        rate = total / interval if interval > 0 else 0.0
        series.append(Series(name, kind, source, dict(tags), {"sum": total, "rate": rate}))
    gauges: dict[tuple[str, str, str | None, TagsKey], float] = {}
    for raw, value in interval_state.gauges.items():
        gauges[_canonical(raw)] = value
    for (kind, name, source, tags), value in gauges.items():
        series.append(Series(name, kind, source, dict(tags), {"value": value}))
    merged: dict[tuple[str, str, str | None, TagsKey], list[float]] = {}
    extras: dict[tuple[str, str, str | None, TagsKey], list[_Sampled]] = {}
    for raw, kept in interval_state.values.items():
        key = _canonical(raw)
        merged.setdefault(key, []).extend(kept)
        if raw in interval_state.sampled:
            extras.setdefault(key, []).append(interval_state.sampled[raw])
    for key, kept in merged.items():
        kind, name, source, tags = key
        kept.sort()
        stats = distribution_stats(kept, percentiles, extras.get(key, ()))
        series.append(Series(name, kind, source, dict(tags), stats, kept))
    members: dict[tuple[str, str, str | None, TagsKey], set[str]] = {}
    for raw, kept_members in interval_state.sets.items():
        members.setdefault(_canonical(raw), set()).update(kept_members)
    for (kind, name, source, tags), unique in members.items():
        series.append(Series(name, kind, source, dict(tags), {"value": len(unique)}))
    return Rollup(now, interval, tuple(series))


def distribution_stats(
    ordered: Sequence[float],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    sampled: Iterable[_Sampled] = (),
) -> dict[str, float]:
    """Return count, sum, min, max, mean, median, stddev, sum_squares and percentiles.

    ``ordered`` must be sorted. ``stddev`` is the population standard deviation. A
    statistic whose exact value is beyond the float range is ``inf`` (with its sign).
    """
    count: float = len(ordered)
    lowest, highest = ordered[0], ordered[-1]
    try:
        total = math.fsum(ordered)
        sum_squares = math.fsum(v * v for v in ordered)
    except OverflowError:  # an intermediate sum left the float range
        total, sum_squares = _scaled_sum(ordered), _INF
    mean, squares, scale = _mean_and_squares(ordered, total)
    for extra in sampled:
        # Fold in the values that were only sampled: exact moments still hold.
        count += extra.count
        total += extra.sum
        sum_squares += extra.sum_squares
        lowest, highest = min(lowest, extra.min), max(highest, extra.max)
    if count != len(ordered):
        overall = total / count
        spread = sum_squares - count * overall * overall
        if math.isfinite(spread) and math.isfinite(overall):
            mean, scale, squares = overall, 1.0, max(0.0, spread) * len(ordered) / count
        # else: moments overflowed; the mean and stddev of the kept values stand in.
    if type(count) is float and count.is_integer():
        count = int(count)  # client-sampled weights that add up to whole events
    stats: dict[str, float] = {
        "count": count,
        "sum": total,
        "min": lowest,
        "max": highest,
        "mean": mean,
        "median": quantile(ordered, 50),
        "stddev": scale * math.sqrt(squares / len(ordered)),
        "sum_squares": sum_squares,
    }
    for pct in percentiles:
        stats[percentile_key(pct)] = quantile(ordered, pct)
    return stats


def _mean_and_squares(ordered: Sequence[float], total: float) -> tuple[float, float, float]:
    """Return the mean, the sum of squared deviations divided by scale², and the scale.

    Deviations are divided by the largest magnitude, so that squaring cannot overflow.
    """
    count = len(ordered)
    scale = float(max(abs(ordered[0]), abs(ordered[-1]))) or 1.0
    if math.isfinite(total):
        mean = total / count
        try:
            return mean, math.fsum(((v - mean) / scale) ** 2 for v in ordered), scale
        except OverflowError:
            pass
    # The sum (or a deviation) overflowed: work on values divided by the scale, all <= 1.
    units = [v / scale for v in ordered]
    mean_unit = math.fsum(units) / count
    squares = math.fsum((u - mean_unit) ** 2 for u in units)
    return mean_unit * scale, squares, scale


def _scaled_sum(values: Sequence[float]) -> float:
    """Return the sum of ``values``; ``inf`` (signed) when it is beyond the float range."""
    scale = float(max(abs(v) for v in values)) or 1.0
    return math.fsum(v / scale for v in values) * scale  # a float product overflows to inf


def quantile(ordered: Sequence[float], pct: float) -> float:
    """Return the ``pct`` percentile of sorted ``ordered`` by linear interpolation."""
    position = (len(ordered) - 1) * pct / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    result = ordered[low] + (ordered[high] - ordered[low]) * fraction
    if not math.isfinite(result):  # the difference of two huge values overflowed
        result = ordered[low] * (1 - fraction) + ordered[high] * fraction
    return result


_NUMBER_TYPES = frozenset((int, float))


def _numbers(values: tuple[Any, ...]) -> bool:
    """Whether every value is a finite number (checked in C): a value list folded in at once."""
    try:
        return _NUMBER_TYPES.issuperset(map(type, values)) and all(map(math.isfinite, values))
    except OverflowError:  # an integer beyond the float range: one by one
        return False


def _is_value_list(event: Any) -> bool:
    return type(event) is tuple and len(event) == 6 and type(event[2]) is tuple


def _each_value(event: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Return the events a value list stands for, one per value, to be checked one by one."""
    kind, name, values, *rest = event
    return [(kind, name, value, *rest) for value in values]
