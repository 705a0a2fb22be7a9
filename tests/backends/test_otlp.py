"""The otlp backend against a loopback receiver that decodes what it gets with
OpenTelemetry's own messages: the metrics, the standard variables, the delivery rules,
and the one line a missing extra costs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from backend_support import backend_maker
from google.protobuf import json_format
from http_receiver import FakeClock, Receiver
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from zibrato.aggregation import Rollup, Series, distribution_stats
from zibrato.backends import BackendConfigError, build
from zibrato.backends.otlp import OtlpBackend

KEY = "otlp-api-key-7f3a9c"
NOW = 1_700_000_000.0


@pytest.fixture
def make(receiver: Receiver) -> Iterator[Callable[..., OtlpBackend]]:
    clock = FakeClock()
    yield from backend_maker(
        OtlpBackend,
        endpoint=receiver.url + "/v1/metrics",
        environ={},
        flush_interval=10.0,
        clock=clock,
        pause=clock.pause,
    )


def requests_of(receiver: Receiver) -> list[ExportMetricsServiceRequest]:
    decoded = []
    for posted in receiver.accepted():
        request = ExportMetricsServiceRequest()
        if posted.headers["content-type"] == "application/json":
            json_format.Parse(posted.body, request)
        else:
            request.ParseFromString(posted.body)
        decoded.append(request)
    return decoded


def points(receiver: Receiver) -> list[dict[str, Any]]:
    """Every data point received, flattened: resource, metric and point fields."""
    found = []
    for request in requests_of(receiver):
        for resource_metrics in request.resource_metrics:
            resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
            for metric in resource_metrics.scope_metrics[0].metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    found.append(
                        {
                            "resource": resource,
                            "name": metric.name,
                            "kind": kind,
                            "unit": metric.unit,
                            "metric": metric,
                            "attributes": {a.key: a.value.string_value for a in point.attributes},
                            "point": point,
                        }
                    )
    return found


def rollup(*series: Series, at: float = NOW, interval: float = 10.0) -> Rollup:
    return Rollup(at, interval, series)


def test_each_kind_becomes_its_otlp_metric(
    receiver: Receiver, make: Callable[..., OtlpBackend]
) -> None:
    backend = make(resource_tags="host.name")
    load = [0.004, 0.02, 0.02, 3.0]
    backend.emit(
        rollup(
            Series(
                "orders",
                "counter",
                "web-1",
                {"shop": "eu", "host.name": "h1"},
                {"sum": 7, "rate": 0.7},
            ),
            Series("depth", "gauge", None, {}, {"value": 2.5}),
            Series("users", "set", None, {}, {"value": 4}),
            Series("load", "timer", None, {}, distribution_stats(load), load),
            Series("items", "distribution", None, {}, distribution_stats([3.0]), [3.0]),
        )
    )
    got = {p["name"]: p for p in points(receiver)}
    orders = got["orders"]
    assert orders["kind"] == "sum" and orders["metric"].sum.is_monotonic
    assert orders["metric"].sum.aggregation_temporality == 2  # cumulative
    assert orders["point"].as_int == 7 and orders["attributes"] == {"shop": "eu"}
    assert orders["resource"]["service.name"] == "web-1" and orders["resource"]["host.name"] == "h1"
    assert orders["point"].start_time_unix_nano == int((NOW - 10) * 1e9)
    assert got["depth"]["kind"] == "gauge" and got["depth"]["point"].as_double == 2.5
    assert got["users"]["kind"] == "gauge" and got["users"]["point"].as_int == 4
    timer = got["load"]["point"]
    assert got["load"]["unit"] == "s" and list(timer.bucket_counts) == [
        1,
        0,
        2,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        0,
        0,
    ]
    assert (timer.count, timer.min, timer.max) == (4, 0.004, 3.0)
    assert list(got["items"]["point"].explicit_bounds) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    instance = orders["resource"]["service.instance.id"]
    assert all(p["resource"]["service.instance.id"] == instance for p in got.values())
    assert got["depth"]["resource"]["service.name"] == "unknown_service:zibrato"


def test_cumulative_series_run_on_and_delta_points_cover_one_interval(
    receiver: Receiver, make: Callable[..., OtlpBackend]
) -> None:
    hits = Series("hits", "counter", None, {}, {"sum": 2, "rate": 0.2})
    cumulative, delta = make(), make(temporality="delta")
    for backend in (cumulative, delta):
        backend.emit(rollup(hits))
        backend.emit(rollup(at=NOW + 10))  # quiet: cumulative sends the total again
        backend.emit(rollup(hits, at=NOW + 20))
    sums = [(p["metric"].sum.aggregation_temporality, p["point"].as_int) for p in points(receiver)]
    assert sums == [(2, 2), (2, 2), (2, 4), (1, 2), (1, 2)]


def test_a_client_sampled_timer_counts_whole_events(
    receiver: Receiver, make: Callable[..., OtlpBackend]
) -> None:
    stats = distribution_stats([0.02, 0.2])
    stats["count"] = 6.6  # each value stands for 3.3 events (rate=0.3)
    make(temporality="delta").emit(rollup(Series("t", "timer", None, {}, stats, [0.02, 0.2])))
    point = points(receiver)[0]["point"]
    assert point.count == 7 and sum(point.bucket_counts) == 7  # rounded, shared fairly
    assert sorted(point.bucket_counts, reverse=True)[:2] == [4, 3]


def test_the_standard_variables_configure_it(receiver: Receiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url + "/",
        "OTEL_EXPORTER_OTLP_HEADERS": f"api-key={KEY},x-team=a",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-team=b",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "lowmemory",
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=prod",
    }
    backend = OtlpBackend(environ=env)
    try:
        assert backend.endpoint == receiver.url + "/v1/metrics"
        assert (backend.timeout, backend.cumulative, backend.protocol) == (2.5, False, "http/json")
        backend.emit(rollup(Series("hits", "counter", None, {}, {"sum": 1, "rate": 0.1})))
        posted = receiver.posted[0]
        assert posted.headers["api-key"] == KEY and posted.headers["x-team"] == "b"
        assert "content-encoding" not in posted.headers
        body = json.loads(posted.body)
        assert (
            body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0][
                "asInt"
            ]
            == 1
        )
        resource = points(receiver)[0]["resource"]
        assert resource["service.name"] == "shop" and resource["deployment.environment"] == "prod"
    finally:
        backend.close_target()
    own = OtlpBackend(
        environ={**env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/m"}
    )
    assert own.endpoint == "http://127.0.0.1:9/m"  # the metrics endpoint is used as it is
    explicit = OtlpBackend(environ=env, endpoint="http://127.0.0.1:8/x", protocol="http/protobuf")
    assert (explicit.endpoint, explicit.protocol) == ("http://127.0.0.1:8/x", "http/protobuf")


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"protocol": "grpc"}, "protocol must be one of http/protobuf, http/json"),
        ({"compression": "zstd"}, "compression must be one of gzip, none"),
        ({"temporality": "sometimes"}, "temporality must be one of"),
        ({"endpoint": "localhost:4318"}, "must be an http:// or https:// URL"),
        ({"headers": "api-key"}, "header #1 is not key=value"),
        ({"timeout": 0}, "timeout and series_ttl must be positive"),
    ],
)
def test_a_setting_that_cannot_work_is_one_line(options: dict[str, Any], said: str) -> None:
    with pytest.raises(BackendConfigError) as raised:
        build([{"kind": "otlp", **options}])
    message = str(raised.value)
    assert said in message and "\n" not in message and message.startswith("otlp backend: ")


def test_settings_keys_and_command_line_options_build_it(receiver: Receiver) -> None:
    (backend,) = build(
        [{"KIND": "otlp", "ENDPOINT": receiver.url + "/v1/metrics", "MAX-BUFFER": "7"}]
    )
    assert isinstance(backend, OtlpBackend) and backend.endpoint.endswith("/v1/metrics")
    backend.close_target()


def test_retryable_statuses_are_retried_and_others_dropped_and_counted(
    receiver: Receiver, make: Callable[..., OtlpBackend]
) -> None:
    hits = Series("hits", "counter", None, {}, {"sum": 1, "rate": 0.1})
    receiver.script.extend([(429, {"Retry-After": "1"}, b""), (502, {}, b""), (504, {}, b"")])
    backend = make()
    backend.emit(rollup(hits))
    assert [p.status for p in receiver.posted] == [429, 502, 504, 200]
    receiver.script.append((500, {}, b"oops"))
    backend.emit(rollup(hits, at=NOW + 10))
    assert [p.status for p in receiver.posted][-1] == 500 and backend.buffered == 0
    assert backend.target_counters()["rejected_points"] == 1


def test_a_partial_success_counts_the_rejected_points(
    receiver: Receiver, make: Callable[..., OtlpBackend]
) -> None:
    answer = ExportMetricsServiceResponse()
    answer.partial_success.rejected_data_points = 1
    receiver.body = answer.SerializeToString()
    backend = make()
    backend.emit(
        rollup(
            Series("a", "gauge", None, {}, {"value": 1}),
            Series("b", "gauge", None, {}, {"value": 2}),
        )
    )
    assert backend.target_counters()["rejected_points"] == 1


def test_header_values_never_show(
    receiver: Receiver, make: Callable[..., OtlpBackend], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script.append((401, {}, f"unknown key {KEY}".encode()))
    backend = make(headers=f"api-key={KEY}")
    backend.emit(rollup(Series("a", "gauge", None, {}, {"value": 1})))
    unreachable = make(endpoint="http://127.0.0.1:1/v1/metrics", headers=f"api-key={KEY}")
    unreachable.emit(rollup(Series("a", "gauge", None, {}, {"value": 1})))
    shown = [caplog.text, repr(backend), str(backend.last_error), str(unreachable.last_error)]
    assert "refused the credentials" in shown[2] and "'api-key'" in shown[1]
    assert not any(KEY in text for text in shown)


def test_without_the_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        sys.modules, "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", None
    )
    with pytest.raises(BackendConfigError) as raised:
        build([{"kind": "otlp"}])
    assert "pip install '.[otlp]'" in str(raised.value) and "\n" not in str(raised.value)
