"""OTLP metric messages for the otlp backend: data points in, an export request out.

The messages are OpenTelemetry's own generated code (``opentelemetry-proto``), encoded as
protobuf or as OTLP/JSON (protobuf's JSON mapping, enums as integers, as the OTLP spec
asks). Pure computation apart from that import, which :func:`load` makes lazily so
that zibrato imports without the ``otlp`` extra.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zibrato import __version__
from zibrato.aggregation import SeriesType
from zibrato.backends.toolkit.cumulative import INT64_MAX

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2

EXTRA = "install the otlp extra (pip install '.[otlp]' in a Zibrato checkout)"
SERVICE_MODULE = "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2"
SCOPE = "zibrato"

Attributes = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class HistogramValue:
    """One histogram point: per-bucket counts (``len(bounds) + 1``), count, sum, min, max."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    sum: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class Point:
    """One data point, and what it belongs to: its resource's own attributes (service.name
    and the tags lifted to the resource), its metric (name and zibrato type)."""

    resource: Attributes
    name: str
    type: str
    attributes: Attributes
    start_ns: int  # 0 for a gauge
    time_ns: int
    value: float | HistogramValue
    cumulative: bool


class Messages:
    """Build export requests from points; the OpenTelemetry classes are loaded once."""

    def __init__(self, *, resource: Mapping[str, str], json_body: bool) -> None:
        self.resource = dict(resource)
        self.json_body = json_body
        try:
            self._pb: Any = importlib.import_module(SERVICE_MODULE)
            self._json_format: Any = importlib.import_module("google.protobuf.json_format")
        except ImportError as exc:
            raise ValueError(
                f"needs opentelemetry-proto ({exc.name} is missing): {EXTRA}"
            ) from None

    def encode(self, points: Sequence[Point]) -> bytes:
        """Return the body of one export request holding ``points``."""
        request = self.request(points)
        if self.json_body:
            as_dict = self._json_format.MessageToDict(request, use_integers_for_enums=True)
            return json.dumps(_counts_as_numbers(as_dict), separators=(",", ":")).encode()
        return bytes(request.SerializeToString())

    def rejected(self, body: bytes, sent: int) -> int:
        """Return how many of ``sent`` points a 2xx answer says it dropped (partial success)."""
        if not body:
            return 0
        response = self._pb.ExportMetricsServiceResponse()
        try:
            if self.json_body:
                self._json_format.Parse(body, response, ignore_unknown_fields=True)
            else:
                response.ParseFromString(body)
        except Exception:  # an answer we cannot read: the request itself was accepted
            return 0
        return min(max(int(response.partial_success.rejected_data_points), 0), sent)

    def request(self, points: Sequence[Point]) -> metrics_service_pb2.ExportMetricsServiceRequest:
        """Group ``points`` by resource, then by metric, into one export request."""
        request: metrics_service_pb2.ExportMetricsServiceRequest = (
            self._pb.ExportMetricsServiceRequest()
        )
        scopes: dict[Attributes, Any] = {}
        metrics: dict[tuple[Attributes, str, str], metrics_pb2.Metric] = {}
        for point in points:
            scope = scopes.get(point.resource)
            if scope is None:
                scope = scopes[point.resource] = self._scope(request, point.resource)
            key = (point.resource, point.name, point.type)
            metric = metrics.get(key)
            if metric is None:
                metric = metrics[key] = _metric(scope, point)
            _add_point(metric, point)
        return request

    def _scope(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, own: Attributes
    ) -> Any:
        resource_metrics = request.resource_metrics.add()
        attributes = {**self.resource, **dict(own)}
        for key, value in attributes.items():
            resource_metrics.resource.attributes.add(key=key).value.string_value = value
        scope = resource_metrics.scope_metrics.add()
        scope.scope.name = SCOPE
        scope.scope.version = __version__
        return scope


def _counts_as_numbers(value: Any) -> Any:
    """Write the 64-bit counts and integer values as JSON numbers, not the strings of
    protobuf's JSON mapping: OTLP/JSON receivers accept numbers, and some (rotel) only
    numbers there. Timestamps stay strings (nanoseconds need more than a double's 53 bits)."""
    if isinstance(value, dict):
        return {
            key: (_numbers(item) if key in _COUNT_FIELDS else _counts_as_numbers(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_counts_as_numbers(item) for item in value]
    return value


def _numbers(value: Any) -> Any:
    if isinstance(value, list):
        return [int(item) for item in value]
    return int(value)


_COUNT_FIELDS = frozenset({"asInt", "count", "bucketCounts"})


def _metric(scope: Any, point: Point) -> metrics_pb2.Metric:
    from opentelemetry.proto.metrics.v1.metrics_pb2 import (
        AGGREGATION_TEMPORALITY_CUMULATIVE,
        AGGREGATION_TEMPORALITY_DELTA,
    )

    metric: metrics_pb2.Metric = scope.metrics.add()
    metric.name = point.name
    temporality = (
        AGGREGATION_TEMPORALITY_CUMULATIVE if point.cumulative else AGGREGATION_TEMPORALITY_DELTA
    )
    if point.type == SeriesType.COUNTER:
        metric.sum.aggregation_temporality = temporality
        metric.sum.is_monotonic = True
    elif point.type in (SeriesType.TIMER, SeriesType.DISTRIBUTION):
        metric.histogram.aggregation_temporality = temporality
        if point.type == SeriesType.TIMER:
            metric.unit = "s"
    else:
        metric.gauge.SetInParent()  # a gauge with no point yet must still say it is one
    return metric


def _add_point(metric: metrics_pb2.Metric, point: Point) -> None:
    value = point.value
    data: metrics_pb2.HistogramDataPoint | metrics_pb2.NumberDataPoint
    if isinstance(value, HistogramValue):
        data = metric.histogram.data_points.add()
        data.count = value.count
        data.sum = value.sum
        data.bucket_counts.extend(value.counts)
        data.explicit_bounds.extend(value.bounds)
        if value.count:
            data.min, data.max = value.min, value.max
    else:
        parent = metric.sum if point.type == SeriesType.COUNTER else metric.gauge
        data = number = parent.data_points.add()
        if type(value) is int and -INT64_MAX <= value <= INT64_MAX:
            number.as_int = value
        else:
            number.as_double = float(value)
    data.start_time_unix_nano = point.start_ns
    data.time_unix_nano = point.time_ns
    for key, text in point.attributes:
        data.attributes.add(key=key).value.string_value = text
