"""``prometheus``: serve ``/metrics`` in the Prometheus text exposition format 0.0.4.

Naming: every character outside ``[a-zA-Z0-9_]`` becomes ``_`` (``:`` too: colons are
reserved for recording rules, and ``promtool check metrics`` rejects them) and a leading
digit gets a ``_`` in front. Counters are exposed as ``NAME_total`` (type counter), timers as
``NAME_seconds`` (type histogram, values in seconds), gauges and distributions keep the
sanitised name (distributions are histograms with no unit; a set is a gauge of its
number of distinct members in the last interval that recorded any). Tags become labels (names
sanitised to ``[a-zA-Z_][a-zA-Z0-9_]*``, a leading ``__`` shortened to ``_``, a tag ``le``
on a histogram renamed ``exported_le``), the series source becomes the label ``source``.
Within one series no value is lost to a clash of label names: when two tags map to one
label name (``a.b`` and ``a_b``), or a tag is called ``source`` on a series with a source,
the first (the source, then the tags sorted by key) keeps the name and the next get
``_2``, ``_3``...: ``{"a.b": "x", "a_b": "y"}`` is exposed as ``a_b="x",a_b_2="y"``.
Different series that end up with the same name and labels are merged: counters and
histograms add up, a gauge keeps the last value.

Counters are running totals since the backend started (a rollup holds per-interval sums).
Histogram buckets are cumulative over all time. When the aggregator sampled a timer's
values (more than ``max_values`` in one interval), bucket counts are scaled from the sample
so that ``_count`` and ``_sum`` stay exact and the buckets stay monotonic.

A name that is already exposed with another type (a counter ``x`` and a gauge
``x_total``; a gauge ``x_count`` next to a histogram ``x``) keeps its first type; the other
series are skipped and counted (``name_conflicts`` and the backend's target errors). The
exposition holds at most ``max_series`` series; the least recently updated are dropped
(``evicted_series``). Health series (``zibrato.*``) are never dropped for ordinary ones:
they have a reserve of their own (``HEALTH_SERIES_RESERVE``).
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Unpack

from zibrato.aggregation import HEALTH_PREFIX, HEALTH_SERIES_RESERVE, Rollup, Series, SeriesType
from zibrato.backends.base import Backend, BackendOptions, Option
from zibrato.backends.toolkit import allowed_hosts as hosts
from zibrato.backends.toolkit.httpserver import HttpServer, Request, Response

DEFAULT_LISTEN = "127.0.0.1:9102"
DEFAULT_BUCKETS = ".005,.01,.025,.05,.1,.25,.5,1,2.5,5,10"
DEFAULT_DISTRIBUTION_BUCKETS = "1,2,5,10,20,50,100,200,500,1000"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_BAD_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
# Timers and distributions are histograms.
_PROMETHEUS_TYPE: dict[str, str] = {
    SeriesType.COUNTER: "counter",
    SeriesType.GAUGE: "gauge",
    SeriesType.SET: "gauge",
}
_SUFFIX: dict[str, str] = {SeriesType.COUNTER: "_total", SeriesType.TIMER: "_seconds"}

Labels = tuple[tuple[str, str], ...]


class MetricNameConflict(ValueError):
    """A series maps to a Prometheus name that another metric type already uses."""


def bucket_list(spec: str | Iterable[float]) -> tuple[float, ...]:
    """Parse histogram bounds (``"0.1,0.5,1"`` or numbers): sorted, unique, finite.

    >>> bucket_list("1, .5,1")
    (0.5, 1.0)
    """
    parts = spec.split(",") if isinstance(spec, str) else spec
    try:
        bounds = {float(part) for part in parts if not isinstance(part, str) or part.strip()}
    except (TypeError, ValueError):
        bounds = {math.nan}
    bounds.discard(math.inf)  # +Inf is always added
    if not bounds or not all(math.isfinite(bound) for bound in bounds):
        raise ValueError(f"buckets must be finite numbers separated by commas, not {spec!r}")
    return tuple(sorted(bounds))


# The histogram options of every backend that sends histograms (prometheus, otlp,
# remote_write): one spelling, one parser, one default.
BUCKET_OPTIONS = (
    Option(
        "buckets",
        "timer histogram bounds in seconds, comma-separated (default: %(default)s)",
        bucket_list,
        DEFAULT_BUCKETS,
        metavar="BOUNDS",
    ),
    Option(
        "distribution-buckets",
        "distribution histogram bounds, comma-separated (default: %(default)s)",
        bucket_list,
        DEFAULT_DISTRIBUTION_BUCKETS,
        metavar="BOUNDS",
    ),
)


def metric_name(name: str, kind: str) -> str:
    """Return the Prometheus family name of a zibrato series name and type.

    >>> metric_name("http.server.request.duration", "timer")
    'http_server_request_duration_seconds'
    >>> metric_name("orders.placed", "counter")
    'orders_placed_total'
    """
    base = _BAD_NAME_CHARS.sub("_", name)
    if base[:1].isdigit():
        base = "_" + base
    suffix = _SUFFIX.get(kind, "")
    return base if base.endswith(suffix) else base + suffix


def label_name(tag: str, *, histogram: bool = False) -> str:
    """Return a valid label name for a tag key."""
    name = _BAD_LABEL_CHARS.sub("_", tag)
    if name[:1].isdigit():
        name = "_" + name
    if name.startswith("__"):  # reserved for Prometheus itself
        name = "_" + name.lstrip("_")
    return "exported_le" if histogram and name == "le" else name


def series_labels(series: Series, *, histogram: bool = False) -> Labels:
    """Return the labels of ``series``, sorted; a clash of label names gets ``_2``, ``_3``..."""
    labels: dict[str, str] = {}
    if series.source is not None:
        labels["source"] = series.source
    for tag, value in sorted(series.tags.items()):
        name = label_name(tag, histogram=histogram)
        unique, number = name, 1
        while unique in labels:
            number += 1
            unique = label_name(f"{name}_{number}")  # "_" + "_2" must not become "__2"
        labels[unique] = value
    return tuple(sorted(labels.items()))


def escape_label_value(value: str) -> str:
    """Escape backslash, double quote and newline, as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_number(value: float) -> str:
    """Return a sample value as Prometheus writes it (``+Inf``, ``NaN``, ``0.5``, ``3``)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    buckets: list[int]  # cumulative count per bound; +Inf is ``count``
    count: int = 0
    sum: float = 0.0

    def observe(self, series: Series) -> None:
        values, count = series.values, int(series.stats["count"])
        # More events than values: the aggregator sampled them; scale the sample up.
        scale = count / len(values) if values else 0.0
        for i, bound in enumerate(self.bounds):
            self.buckets[i] += round(bisect.bisect_right(values, bound) * scale)
        self.count += count
        self.sum += series.stats["sum"]


@dataclass(slots=True)
class _Family:
    name: str
    type: str  # the Prometheus type
    source_type: str  # the zibrato type
    help: str
    series: dict[Labels, float | _Histogram] = field(default_factory=dict)


def _claimed_names(name: str, kind: str) -> tuple[str, ...]:
    """Every name a family's samples use, or that a parser may derive from them."""
    if kind == "histogram":
        return (name, f"{name}_bucket", f"{name}_sum", f"{name}_count")
    if kind == "counter":
        return (name, name.removesuffix("_total"))
    return (name,)


class PrometheusBackend(Backend):
    """Serve the aggregated metrics on ``http://LISTEN/metrics`` for Prometheus to scrape.

    >>> backend = PrometheusBackend(connect="tcp://127.0.0.1:5551", listen="127.0.0.1:0")
    >>> backend.start()                                   # doctest: +SKIP
    >>> requests.get(backend.url).text                    # doctest: +SKIP
    '# HELP orders_placed_total zibrato counter orders.placed\\n# TYPE orders_placed_total ...'
    >>> backend.stop()                                    # doctest: +SKIP

    The text is rendered once per flush, so a scrape only copies bytes.
    """

    kind = "prometheus"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "listen",
            "where to serve /metrics (default: %(default)s)",
            default=DEFAULT_LISTEN,
            metavar="HOST:PORT",
        ),
        Option("allowed-hosts", hosts.OPTION_HELP, hosts.parse_allowed_hosts, metavar="NAMES"),
        *BUCKET_OPTIONS,
    )

    def __init__(
        self,
        *,
        listen: str = DEFAULT_LISTEN,
        allowed_hosts: str | Iterable[str] | None = None,
        buckets: str | Iterable[float] = DEFAULT_BUCKETS,
        distribution_buckets: str | Iterable[float] = DEFAULT_DISTRIBUTION_BUCKETS,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        self._http = HttpServer(
            listen,
            {"/metrics": self._serve_metrics},
            name=self.kind,
            allowed_hosts=allowed_hosts,
            home="/metrics",
            not_found="not found: metrics are served on /metrics\n",
        )
        self.host, self.port = self._http.host, self._http.port
        self.url = self._http.url("/metrics")
        self.buckets = bucket_list(buckets)
        self.distribution_buckets = bucket_list(distribution_buckets)
        self.max_exposed_series = self.aggregator.max_series
        self.name_conflicts = 0
        self.evicted_series = 0
        self._families: dict[str, _Family] = {}
        self._claims: set[str] = set()
        # Least recently updated first; health series apart, so that they are never
        # evicted to make room for ordinary ones.
        self._recency: OrderedDict[tuple[str, Labels], None] = OrderedDict()
        self._health_recency: OrderedDict[tuple[str, Labels], None] = OrderedDict()
        self._exposition_lock = threading.Lock()
        self._body = b""

    def __repr__(self) -> str:
        return f"<PrometheusBackend connect={self.connect!r} url={self.url!r}>"

    # -- serving -----------------------------------------------------------------------
    def start(self) -> None:
        """Bind the HTTP server, serve it on a daemon thread, then start receiving."""
        self._http.start()
        self.port = self._http.port
        self.url = self._http.url("/metrics")
        try:
            super().start()
        except BaseException:
            self.close_target()
            raise

    def describe(self) -> str:
        return f"serving {self.url}"

    def target_counters(self) -> Mapping[str, float]:
        http = {f"http_{name}": count for name, count in self._http.counters().items()}
        own = {"name_conflicts": self.name_conflicts, "evicted_series": self.evicted_series}
        return {**own, **http}

    def close_target(self) -> None:
        self._http.stop()

    def _serve_metrics(self, request: Request) -> Response:
        return Response(200, self._body, CONTENT_TYPE)

    def exposition(self) -> bytes:
        """Return the text served on ``/metrics`` (as rendered at the last flush)."""
        return self._body

    # -- updating ----------------------------------------------------------------------
    def emit(self, rollup: Rollup) -> None:
        with self._exposition_lock:
            for series in rollup.series:
                self._update(series)
            while len(self._recency) > self.max_exposed_series:
                self._evict_oldest(self._recency)
            while len(self._health_recency) > HEALTH_SERIES_RESERVE:
                self._evict_oldest(self._health_recency)
            self._body = render(self._families.values())

    def _update(self, series: Series) -> None:
        family = self._family(series)
        if family is None:
            return
        key = series_labels(series, histogram=family.type == "histogram")
        state = family.series.get(key)
        if series.type == SeriesType.COUNTER:
            previous = state if isinstance(state, float | int) else 0
            family.series[key] = previous + series.stats["sum"]
        # a set's value: its number of distinct members
        elif series.type in (SeriesType.GAUGE, SeriesType.SET):
            family.series[key] = series.stats["value"]
        else:
            if not isinstance(state, _Histogram):
                bounds = (
                    self.buckets if series.type == SeriesType.TIMER else self.distribution_buckets
                )
                state = family.series[key] = _Histogram(bounds, [0] * len(bounds))
            state.observe(series)
        health = series.name.startswith(HEALTH_PREFIX)
        recency = self._health_recency if health else self._recency
        recency[family.name, key] = None
        recency.move_to_end((family.name, key))

    def _family(self, series: Series) -> _Family | None:
        name = metric_name(series.name, series.type)
        family = self._families.get(name)
        if family is not None and family.source_type == series.type:
            return family
        kind = _PROMETHEUS_TYPE.get(series.type, "histogram")
        claims = _claimed_names(name, kind)
        if family is None and self._claims.isdisjoint(claims):
            unit = " (seconds)" if series.type == SeriesType.TIMER else ""
            help_text = f"zibrato {series.type} {series.name}{unit}"
            family = self._families[name] = _Family(name, kind, series.type, help_text)
            self._claims.update(claims)
            return family
        self.name_conflicts += 1
        self.count_target_error(
            MetricNameConflict(
                f"{series.type} {series.name!r} would be exposed as {name!r}, which another "
                "metric type already uses there; its points are skipped"
            )
        )
        return None

    def _evict_oldest(self, recency: OrderedDict[tuple[str, Labels], None]) -> None:
        (name, labels), _ = recency.popitem(last=False)
        family = self._families.get(name)
        if family is None or family.series.pop(labels, None) is None:
            return  # already gone with the other recency list
        self.evicted_series += 1
        if not family.series:
            del self._families[name]
            self._claims.difference_update(_claimed_names(name, family.type))


def render(families: Iterable[_Family]) -> bytes:
    """Return the text exposition (format 0.0.4) of ``families``."""
    lines: list[str] = []
    for family in sorted(families, key=lambda family: family.name):
        name = family.name
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {family.type}")
        for labels in sorted(family.series):
            state = family.series[labels]
            if isinstance(state, _Histogram):
                lines.extend(_histogram_lines(name, labels, state))
            else:
                lines.append(f"{name}{_label_text(labels)} {format_number(state)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _histogram_lines(name: str, labels: Labels, state: _Histogram) -> Iterable[str]:
    for bound, count in zip(state.bounds, state.buckets, strict=True):
        yield f"{name}_bucket{_label_text((*labels, ('le', format_number(bound))))} {count}"
    yield f"{name}_bucket{_label_text((*labels, ('le', '+Inf')))} {state.count}"
    yield f"{name}_sum{_label_text(labels)} {format_number(state.sum)}"
    yield f"{name}_count{_label_text(labels)} {state.count}"


def _label_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels) + "}"
