"""``otlp``: push every rollup to an OpenTelemetry collector or vendor over OTLP/HTTP.

Metrics, built with OpenTelemetry's own messages (:mod:`zibrato.backends.otlp_messages`):

* counter: a monotonic ``Sum``; cumulative by default (the running total since the
  point's start time), or the interval's sum with ``temporality="delta"``;
* gauge: a ``Gauge`` of the last value; set: a ``Gauge`` of its number of distinct members;
* timer (unit ``s``) and distribution: a ``Histogram`` with explicit bounds (``buckets``,
  ``distribution_buckets``: the prometheus backend's defaults), with ``count``, ``sum``,
  ``min`` and ``max``. Bucket counts are integers: see
  :mod:`zibrato.backends.toolkit.cumulative` for how sampled values are counted.

Cumulative series (:class:`~zibrato.backends.toolkit.cumulative.CumulativeStore`) are sent
at every flush, each with the start time of its run; a series not updated for
``series_ttl`` seconds is no longer sent and, if it comes back, starts a new run (a new
start time: a reset). Delta points cover one flush interval and only the series it saw.

Resources: a series' source is its resource's ``service.name`` (a series without one gets
``service_name``: ``$OTEL_SERVICE_NAME``, else ``service.name`` of the resource attributes,
else ``unknown_service:zibrato``). Every resource also carries ``service.instance.id``, a
UUID of this backend process (so the cumulative series of two hosts never collide),
``telemetry.sdk.*``, and ``resource_attributes`` (``$OTEL_RESOURCE_ATTRIBUTES``). Tags
stay on the points as attributes, except those named in ``resource_tags``
(``host.name,deployment.environment``), which move to the resource.

Settings come from the options, else from the standard variables: the endpoint from
``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` (used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
(``/v1/metrics`` appended), else ``http://localhost:4318/v1/metrics``; ``..._HEADERS``,
``..._TIMEOUT`` (milliseconds), ``..._COMPRESSION`` (``gzip``, the default here, or
``none``), ``..._PROTOCOL`` (``http/protobuf``, the default, or ``http/json``; ``grpc`` is
not supported), each ``OTEL_EXPORTER_OTLP_METRICS_*`` before its ``OTEL_EXPORTER_OTLP_*``,
and ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` (``cumulative``, ``delta``, or
``lowmemory``, which for zibrato's counters and histograms is delta).

Delivery (:mod:`zibrato.backends.toolkit.push`): 429, 502, 503 and 504 are retried with
backoff, honouring ``Retry-After``, within the flush interval, then kept for the next
flush; every other failed answer drops its points, counted in ``rejected_points``, as
are the points a collector reports dropping in a partial success. Points wait in a buffer
of ``max_buffer`` (the oldest dropped beyond, counted in ``dropped_points``). Header
values (API keys) never appear in logs, errors or the repr.
"""

from __future__ import annotations

import gzip
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar, Unpack

import requests

from zibrato import __version__
from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import BackendOptions, Option
from zibrato.backends.otlp_messages import Attributes, HistogramValue, Messages, Point
from zibrato.backends.prometheus import (
    BUCKET_OPTIONS,
    DEFAULT_BUCKETS,
    DEFAULT_DISTRIBUTION_BUCKETS,
    bucket_list,
)
from zibrato.backends.toolkit.cumulative import (
    DEFAULT_TTL,
    CumulativeStore,
    Histogram,
    Run,
    interval_buckets,
)
from zibrato.backends.toolkit.push import (
    DEFAULT_TIMEOUT,
    Pusher,
    PushingBackend,
    StatusPolicy,
    check_url,
    parse_headers,
)

DEFAULT_ENDPOINT = "http://localhost:4318/v1/metrics"
DEFAULT_SERVICE = "unknown_service:zibrato"
DEFAULT_MAX_BUFFER = 20_000
MAX_PER_REQUEST = 1_000  # points
PROTOCOLS = ("http/protobuf", "http/json")
COMPRESSIONS = ("gzip", "none")
TEMPORALITIES = ("cumulative", "delta", "lowmemory")
# The OTLP spec's retryable statuses; anything else is final.
RETRYABLE = frozenset({429, 502, 503, 504})

SeriesKey = tuple[str, str, "str | None", tuple[tuple[str, str], ...]]


def _environment(name: str, environ: Mapping[str, str]) -> str | None:
    """``OTEL_EXPORTER_OTLP_METRICS_{name}``, else ``OTEL_EXPORTER_OTLP_{name}``."""
    for variable in (f"OTEL_EXPORTER_OTLP_METRICS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(variable, "").strip()
        if value:
            return value
    return None


def endpoint_from(environ: Mapping[str, str]) -> str:
    """The endpoint the OTLP variables name, else the default."""
    own = environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
    if own:
        return own
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/metrics" if base else DEFAULT_ENDPOINT


def _choice(value: str | None, choices: Sequence[str], what: str, default: str) -> str:
    chosen = (value or default).strip().lower()
    if chosen not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {chosen[:40]!r}")
    return chosen


class OtlpBackend(PushingBackend):
    """Push every rollup to an OTLP/HTTP endpoint (a collector, or a vendor's).

    >>> OtlpBackend(connect="tcp://127.0.0.1:5551",
    ...             endpoint="http://127.0.0.1:4318/v1/metrics").start()   # doctest: +SKIP
    """

    kind = "otlp"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "endpoint",
            "the full OTLP/HTTP metrics URL (default: $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "
            f"$OTEL_EXPORTER_OTLP_ENDPOINT/v1/metrics, else {DEFAULT_ENDPOINT})",
        ),
        Option("protocol", "http/protobuf or http/json (default: $OTEL_..._PROTOCOL, protobuf)"),
        Option(
            "headers",
            "HTTP headers, KEY=VALUE,... (default: $OTEL_EXPORTER_OTLP_HEADERS, which is "
            "safer for API keys: command lines are visible to other users)",
        ),
        Option("compression", "gzip or none (default: $OTEL_..._COMPRESSION, else gzip)"),
        Option("timeout", "seconds per request (default: $OTEL_..._TIMEOUT, else 5)", float),
        Option(
            "temporality",
            "cumulative or delta (default: $OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "
            "else cumulative)",
        ),
        Option(
            "service-name", f"service.name of series without a source (default: {DEFAULT_SERVICE})"
        ),
        Option(
            "resource-attributes",
            "resource attributes, KEY=VALUE,... (default: $OTEL_RESOURCE_ATTRIBUTES)",
        ),
        Option(
            "resource-tags", "tag keys that go on the resource, not the points, comma-separated"
        ),
        *BUCKET_OPTIONS,
        Option(
            "max-buffer",
            "points kept while the endpoint is unreachable; the oldest are dropped beyond "
            "(default: %(default)s)",
            int,
            DEFAULT_MAX_BUFFER,
        ),
        Option(
            "series-ttl",
            "seconds a cumulative series is still sent without an update (default: %(default)s)",
            float,
            DEFAULT_TTL,
        ),
    )

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        protocol: str | None = None,
        headers: str | Mapping[str, str] | None = None,
        compression: str | None = None,
        timeout: float | None = None,
        temporality: str | None = None,
        service_name: str | None = None,
        resource_attributes: str | Mapping[str, str] | None = None,
        resource_tags: str | Iterable[str] | None = None,
        buckets: str | Iterable[float] = DEFAULT_BUCKETS,
        distribution_buckets: str | Iterable[float] = DEFAULT_DISTRIBUTION_BUCKETS,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        series_ttl: float = DEFAULT_TTL,
        environ: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], bool] | None = None,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        env = os.environ if environ is None else environ
        self.endpoint = check_url(endpoint or endpoint_from(env), what="otlp endpoint")
        self.protocol = _choice(
            protocol or _environment("PROTOCOL", env), PROTOCOLS, "protocol", PROTOCOLS[0]
        )
        self.compression = _choice(
            compression or _environment("COMPRESSION", env), COMPRESSIONS, "compression", "gzip"
        )
        preference = temporality or env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
        self.cumulative = _choice(preference, TEMPORALITIES, "temporality", "cumulative") == (
            "cumulative"
        )
        self.timeout = timeout if timeout is not None else _timeout_from(env)
        if not 0 < self.timeout < float("inf") or series_ttl <= 0:
            raise ValueError("timeout and series_ttl must be positive")
        sent_headers = {
            **parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS")),
            **parse_headers(env.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS")),
            **parse_headers(headers),
        }
        self._header_names = tuple(sent_headers)
        resource = {
            **parse_headers(env.get("OTEL_RESOURCE_ATTRIBUTES")),
            **_attributes(resource_attributes),
        }
        self.service_name = (
            service_name
            or env.get("OTEL_SERVICE_NAME")
            or resource.pop("service.name", None)
            or DEFAULT_SERVICE
        )
        resource.pop("service.name", None)
        resource.setdefault("service.instance.id", str(uuid.uuid4()))
        resource.update(
            {
                "telemetry.sdk.name": "zibrato",
                "telemetry.sdk.language": "python",
                "telemetry.sdk.version": __version__,
            }
        )
        self.resource = resource
        self.resource_tags = _tag_keys(resource_tags)
        self.buckets = bucket_list(buckets)
        self.distribution_buckets = bucket_list(distribution_buckets)
        self._messages = Messages(resource=resource, json_body=self.protocol == "http/json")
        self._store: CumulativeStore[SeriesKey] = CumulativeStore(
            buckets=self._bounds, ttl=series_ttl, max_series=self.aggregator.max_series
        )
        content_type = (
            "application/json" if self.protocol == "http/json" else "application/x-protobuf"
        )
        wire = {"Content-Type": content_type, "User-Agent": f"zibrato-otlp/{__version__}"}
        if self.compression == "gzip":
            wire["Content-Encoding"] = "gzip"
        self._push: Pusher[Point] = Pusher(
            url=self.endpoint,
            encode=self._encode,
            on_error=self.count_target_error,
            policy=StatusPolicy(retry=RETRYABLE.__contains__),
            kind=self.kind,
            what="points",
            headers={**sent_headers, **wire},
            timeout=self.timeout,
            max_buffer=max_buffer,
            max_per_request=MAX_PER_REQUEST,
            session=session,
            accepted=self._messages.rejected,
            name_item=lambda point: point.name,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            clock=clock,
            pause=pause if pause is not None else self.stop_event.wait,
        )

    def __repr__(self) -> str:
        return f"<OtlpBackend endpoint={self.endpoint!r} headers={list(self._header_names)!r}>"

    def describe(self) -> str:
        temporality = "cumulative" if self.cumulative else "delta"
        return f"sending OTLP ({self.protocol}, {temporality}) to {self.endpoint}"

    def target_counters(self) -> Mapping[str, float]:
        return {
            "dropped_points": self._push.dropped,
            "rejected_points": self._push.rejected,
            "evicted_series": self._store.evicted,
        }

    # -- one flush -----------------------------------------------------------------------
    def emit(self, rollup: Rollup) -> None:
        deadline = self.push_deadline()
        self._push.push(self.points(rollup), deadline)

    def points(self, rollup: Rollup) -> list[Point]:
        """Return the points of one flush (cumulative: every live series)."""
        start = rollup.timestamp - rollup.interval
        now_ns = _nanoseconds(rollup.timestamp)
        if not self.cumulative:
            return [self._delta_point(s, _nanoseconds(start), now_ns) for s in rollup.series]
        for series in rollup.series:
            self._store.update(series.key(), series, start=start, now=rollup.timestamp)
        self._store.expire(rollup.timestamp)
        return [self._cumulative_point(key, run, now_ns) for key, run in self._store]

    def _cumulative_point(self, key: SeriesKey, run: Run, now_ns: int) -> Point:
        series_type, name, source, tags = key
        gauge = series_type in (SeriesType.GAUGE, SeriesType.SET)
        value: float | HistogramValue = run.value
        if run.histogram is not None:
            value = _histogram_value(run.histogram)
        start_ns = 0 if gauge else _nanoseconds(run.start)
        return self._point(name, series_type, source, tags, start_ns, now_ns, value)

    def _delta_point(self, series: Series, start_ns: int, now_ns: int) -> Point:
        stats = series.stats
        value: float | HistogramValue
        if series.type == SeriesType.COUNTER:
            value = stats["sum"]
        elif series.type in (SeriesType.GAUGE, SeriesType.SET):
            value, start_ns = stats["value"], 0
        else:
            bounds = self._bounds(series)
            counts = interval_buckets(series.values, stats["count"], bounds)
            value = HistogramValue(
                bounds, tuple(counts), sum(counts), stats["sum"], stats["min"], stats["max"]
            )
        tags = tuple(sorted(series.tags.items()))
        return self._point(series.name, series.type, series.source, tags, start_ns, now_ns, value)

    def _point(
        self,
        name: str,
        series_type: str,
        source: str | None,
        tags: Attributes,
        start_ns: int,
        time_ns: int,
        value: float | HistogramValue,
    ) -> Point:
        lifted = tuple((k, v) for k, v in tags if k in self.resource_tags)
        kept = tuple((k, v) for k, v in tags if k not in self.resource_tags)
        service = dict(lifted).get("service.name", self.service_name)
        own = (
            *((k, v) for k, v in lifted if k != "service.name"),
            ("service.name", source or service),
        )
        return Point(own, name, series_type, kept, start_ns, time_ns, value, self.cumulative)

    def _bounds(self, series: Series) -> tuple[float, ...]:
        return self.buckets if series.type == SeriesType.TIMER else self.distribution_buckets

    def _encode(self, points: Sequence[Point]) -> bytes:
        body = self._messages.encode(points)
        return gzip.compress(body, compresslevel=6) if self.compression == "gzip" else body


def _histogram_value(histogram: Histogram) -> HistogramValue:
    return HistogramValue(
        histogram.bounds,
        tuple(histogram.counts),
        histogram.count,
        histogram.sum,
        histogram.min,
        histogram.max,
    )


def _nanoseconds(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def _timeout_from(environ: Mapping[str, str]) -> float:
    text = _environment("TIMEOUT", environ)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        return float(text) / 1000  # the variables are in milliseconds
    except ValueError:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_TIMEOUT must be milliseconds, not {text[:40]!r}"
        ) from None


def _attributes(value: str | Mapping[str, str] | None) -> dict[str, str]:
    try:
        return parse_headers(value)
    except ValueError as exc:
        raise ValueError(f"resource attributes: {exc}") from None


def _tag_keys(value: str | Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    parts: Iterable[str] = value.split(",") if isinstance(value, str) else value
    return frozenset(part.strip() for part in parts if isinstance(part, str) and part.strip())
