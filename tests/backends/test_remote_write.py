"""The remote-write backend against a loopback receiver that decodes what it gets
(snappy, then the WriteRequest): the prometheus backend's series, the wire rules of
remote write 1.0, credentials, retries, and the one line a missing extra costs."""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import cramjam
import pytest
from backend_support import backend_maker
from http_receiver import FakeClock, Receiver
from prometheus_client.parser import text_string_to_metric_families

from zibrato.aggregation import Rollup, Series, distribution_stats
from zibrato.backends import BackendConfigError, build
from zibrato.backends.prometheus import PrometheusBackend
from zibrato.backends.prompb.remote_write_pb2 import WriteRequest
from zibrato.backends.remote_write import PASSWORD_ENV, RemoteWriteBackend

NOW = 1_700_000_000.0
TOKEN = "rw-bearer-token-5d1e"
Sample = tuple[str, tuple[tuple[str, str], ...], float]


@pytest.fixture
def make(receiver: Receiver) -> Iterator[Callable[..., RemoteWriteBackend]]:
    clock = FakeClock()
    yield from backend_maker(
        RemoteWriteBackend,
        url=receiver.url + "/api/v1/write",
        instance="host-1:42",
        flush_interval=10.0,
        clock=clock,
        pause=clock.pause,
    )


def requests_of(receiver: Receiver) -> list[WriteRequest]:
    decoded = []
    for posted in receiver.accepted():
        request = WriteRequest()
        request.ParseFromString(bytes(cramjam.snappy.decompress_raw(posted.body)))
        decoded.append(request)
    return decoded


def samples(request: WriteRequest) -> set[Sample]:
    found = set()
    for series in request.timeseries:
        labels = {label.name: label.value for label in series.labels}
        name = labels.pop("__name__")
        for sample in series.samples:
            found.add((name, tuple(sorted(labels.items())), sample.value))
    return found


def rollups() -> list[Rollup]:
    load = [0.004, 0.02, 0.02, 3.0]
    first = (
        Series(
            "orders.placed",
            "counter",
            "web-1",
            {"shop": "eu", "job": "cron"},
            {"sum": 7, "rate": 0.7},
        ),
        Series("queue.depth", "gauge", None, {}, {"value": 2.5}),
        Series("users", "set", None, {}, {"value": 4}),
        Series("orders.load", "timer", None, {"le": "x"}, distribution_stats(load), load),
        Series("orders.items", "distribution", None, {}, distribution_stats([3.0]), [3.0]),
    )
    second = (
        Series(
            "orders.placed",
            "counter",
            "web-1",
            {"shop": "eu", "job": "cron"},
            {"sum": 3, "rate": 0.3},
        ),
    )
    return [Rollup(NOW, 10.0, first), Rollup(NOW + 10, 10.0, second)]


def test_the_series_are_those_prometheus_would_scrape_plus_job_and_instance(
    receiver: Receiver, make: Callable[..., RemoteWriteBackend]
) -> None:
    backend = make()
    scraped = PrometheusBackend(listen="127.0.0.1:0")
    for one in rollups():
        backend.emit(one)
        scraped.emit(one)
    exposed: set[Sample] = set()
    for family in text_string_to_metric_families(scraped.exposition().decode()):
        for s in family.samples:
            labels = {("exported_job" if k == "job" else k): v for k, v in s.labels.items()}
            labels.update(instance="host-1:42", job="zibrato")
            exposed.add((s.name, tuple(sorted(labels.items())), float(s.value)))
    last = requests_of(receiver)[-1]
    assert samples(last) == exposed  # every series again, with its running total
    assert (
        "orders_placed_total",
        (
            ("exported_job", "cron"),
            ("instance", "host-1:42"),
            ("job", "zibrato"),
            ("shop", "eu"),
            ("source", "web-1"),
        ),
        10.0,
    ) in exposed


def test_the_wire_is_remote_write_1_0(
    receiver: Receiver, make: Callable[..., RemoteWriteBackend]
) -> None:
    make().emit(rollups()[0])
    posted = receiver.posted[0]
    assert posted.path == "/api/v1/write"
    assert posted.headers["content-encoding"] == "snappy"
    assert posted.headers["content-type"] == "application/x-protobuf"
    assert posted.headers["x-prometheus-remote-write-version"] == "0.1.0"
    for series in requests_of(receiver)[0].timeseries:
        names = [label.name for label in series.labels]
        assert names == sorted(names) and "__name__" in names
        assert [s.timestamp for s in series.samples] == [int(NOW * 1000)]


def test_5xx_and_429_are_retried_and_other_4xx_never(
    receiver: Receiver, make: Callable[..., RemoteWriteBackend]
) -> None:
    backend = make()
    receiver.script.extend([(500, {}, b""), (429, {"Retry-After": "2"}, b""), (503, {}, b"")])
    backend.emit(rollups()[0])
    assert [p.status for p in receiver.posted] == [500, 429, 503, 200]
    for status in (400, 401, 404):
        receiver.script.append((status, {}, b"out of order sample"))
        backend.emit(rollups()[1])
        assert receiver.posted[-1].status == status and backend.buffered == 0
    assert len(receiver.posted) == 7  # one request each
    assert backend.target_counters()["rejected_samples"] > 0


def test_basic_auth_and_bearer_tokens(
    receiver: Receiver, make: Callable[..., RemoteWriteBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw-from-env")
    make(username="writer").emit(rollups()[1])
    make(bearer_token=TOKEN, headers="X-Scope-OrgID=shop").emit(rollups()[1])
    basic, bearer = (posted.headers for posted in receiver.posted)
    assert basic["authorization"] == "Basic " + base64.b64encode(b"writer:pw-from-env").decode()
    assert bearer["authorization"] == f"Bearer {TOKEN}" and bearer["x-scope-orgid"] == "shop"


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({}, "needs the remote write endpoint"),
        ({"url": "http://u:p@127.0.0.1/w"}, "must not hold credentials"),
        ({"url": "http://127.0.0.1/w", "password": "x"}, "a password needs the username"),
        ({"url": "http://127.0.0.1/w", "username": "u", "bearer_token": "t"}, "not both"),
        ({"url": "http://127.0.0.1/w", "buckets": "1,nan"}, "buckets must be finite"),
    ],
)
def test_a_setting_that_cannot_work_is_one_line(options: dict[str, Any], said: str) -> None:
    with pytest.raises(BackendConfigError) as raised:
        build([{"kind": "remote-write", **options}])
    assert said in str(raised.value) and "\n" not in str(raised.value)


def test_the_token_never_shows(
    receiver: Receiver, make: Callable[..., RemoteWriteBackend], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script.append((401, {}, f"bad token {TOKEN}".encode()))
    backend = make(bearer_token=TOKEN)
    backend.emit(rollups()[1])
    shown = [caplog.text, repr(backend), str(backend.last_error)]
    assert "refused the credentials" in shown[2]
    assert not any(TOKEN in text for text in shown)


def test_a_name_taken_by_another_type_is_skipped_and_counted(
    receiver: Receiver, make: Callable[..., RemoteWriteBackend]
) -> None:
    backend = make()
    backend.emit(
        Rollup(
            NOW,
            10.0,
            (
                Series("x", "counter", None, {}, {"sum": 1, "rate": 0.1}),
                Series("x_total", "gauge", None, {}, {"value": 5}),
            ),
        )
    )
    names = {name for name, _, _ in samples(requests_of(receiver)[0])}
    assert "x_total" in names and backend.name_conflicts == 1


def test_without_the_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cramjam", None)
    with pytest.raises(BackendConfigError) as raised:
        build([{"kind": "remote-write", "url": "http://127.0.0.1:9090/api/v1/write"}])
    assert "pip install '.[remote-write]'" in str(raised.value)
