"""Outgoing HTTP calls (``zibrato.framework.http_client``) with real libraries against a real
local server: ``requests`` (urllib3 underneath), urllib3 itself, httpx sync and async;
inside a request and outside one; beside OpenTelemetry's requests instrumentation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from time import perf_counter

import httpx
import pytest
import requests
import urllib3
from upstream_support import Upstream, upstream_server

from zibrato.client import Zibrato
from zibrato.framework import http_client, schema
from zibrato.framework.http_client import Addresses
from zibrato.framework.units import RequestRecorder, RequestState, current_unit
from zibrato.publisher import Publisher
from zibrato.testing import CapturedMetrics, RecordedEvent, capture

NAME = schema.HTTP_CLIENT_DURATION


@pytest.fixture
def client(dead_address: str) -> Iterator[Zibrato]:
    made = Zibrato(publisher=Publisher(dead_address))
    yield made
    made.close(0)


@pytest.fixture
def measured(client: Zibrato) -> Iterator[Callable[[], Zibrato | None]]:
    """Outgoing calls measured, those outside requests recorded through ``client``."""
    before = list(http_client._outside)
    http_client.uninstall()
    outside: list[Zibrato | None] = [client]
    http_client.install(outside=lambda: outside[0])
    yield lambda: outside[0]
    http_client.uninstall()
    if before:  # the adapter's installation, as it was
        http_client.install(outside=before[0])


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


@pytest.fixture
def metrics() -> Iterator[CapturedMetrics]:
    with capture() as captured:
        yield captured


def in_a_request(work: Callable[[], object], client: Zibrato, route: str = "r/") -> RequestState:
    """Run ``work`` as a request to ``route`` would, and record that request."""
    state = RequestState()
    state.route = route
    token = current_unit.set(state)
    start = perf_counter()
    try:
        work()
    finally:
        seconds = perf_counter() - start
        current_unit.reset(token)
        RequestRecorder(client, tags=schema.TagCache()).record(state, "GET", seconds)
    return state


def calls(metrics: CapturedMetrics) -> list[RecordedEvent]:
    return metrics.filter(NAME)


def breakdown(metrics: CapturedMetrics) -> dict[str, float]:
    return {e.tags[schema.COMPONENT]: e.value for e in metrics.filter(schema.BREAKDOWN)}


def test_a_requests_call_in_a_request_is_timed_tagged_and_part_of_its_breakdown(
    measured: object, client: Zibrato, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    in_a_request(lambda: requests.get(upstream.url("/delay?ms=60&x=secret"), timeout=10), client)
    client.flush()
    (call,) = calls(metrics)
    assert call.tags == {
        schema.SERVER_ADDRESS: "127.0.0.1",
        schema.SERVER_PORT: str(upstream.port),
        schema.METHOD: "GET",
        schema.STATUS: "200",
        schema.PARENT_ROUTE: "r/",
    }
    assert 0.06 <= call.value < 1.0
    parts = breakdown(metrics)
    assert parts["http.client"] == pytest.approx(call.value, abs=0.002)
    assert set(parts) == {"http.client", "app"}


def test_failures_carry_error_type(
    measured: object,
    client: Zibrato,
    upstream: Upstream,
    metrics: CapturedMetrics,
    dead_address: str,
) -> None:
    dead_port = dead_address.rsplit(":", 1)[1]

    def work() -> None:
        requests.post(upstream.url("/status/503"), data=b"x", timeout=10)
        requests.get(upstream.url("/status/404"), timeout=10)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{dead_port}/", timeout=10)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{dead_port}/", timeout=10)

    in_a_request(work, client)
    client.flush()
    found = {(c.tags[schema.METHOD], c.tags.get(schema.STATUS), c.tags.get(schema.ERROR_TYPE))
             for c in calls(metrics)}  # fmt: skip
    assert found == {
        ("POST", "503", "503"),
        ("GET", "404", "404"),  # a 4xx fails a client call (OpenTelemetry's rule)
        ("GET", None, "MaxRetryError"),  # urllib3's error, as requests' adapter gets it
        ("GET", None, "ConnectError"),
    }


def test_urllib3_and_httpx_are_measured_too(
    measured: object, client: Zibrato, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    def work() -> None:
        with urllib3.PoolManager() as pool:
            pool.request("GET", upstream.url("/"))
        with httpx.Client() as session:
            session.get(upstream.url("/"))

    in_a_request(work, client)
    client.flush()
    assert len(calls(metrics)) == 2


def test_async_httpx_calls_gathered_count_their_union(
    measured: object, client: Zibrato, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    async def gather() -> None:
        async with httpx.AsyncClient() as session:
            await asyncio.gather(*(session.get(upstream.url("/delay?ms=80")) for _ in range(3)))

    in_a_request(lambda: asyncio.run(gather()), client)
    client.flush()
    assert [c.tags[schema.STATUS] for c in calls(metrics)] == ["200"] * 3
    assert 0.075 < breakdown(metrics)["http.client"] < 0.2  # about 80 ms, not 240


def test_a_call_outside_requests_is_recorded_at_once_without_a_route(
    measured: Callable[[], Zibrato | None], client: Zibrato, upstream: Upstream,
    metrics: CapturedMetrics,
) -> None:  # fmt: skip
    requests.get(upstream.url("/"), timeout=10)
    client.flush()
    (call,) = calls(metrics)
    assert schema.PARENT_ROUTE not in call.tags and call.tags[schema.STATUS] == "200"


def test_switched_off_nothing_is_recorded(
    measured: Callable[[], Zibrato | None], client: Zibrato, upstream: Upstream,
    metrics: CapturedMetrics,
) -> None:  # fmt: skip
    from zibrato.framework.time_spent import Switches

    state = RequestState()
    state.switches = Switches(http_client=False)
    token = current_unit.set(state)
    try:
        requests.get(upstream.url("/"), timeout=10)
    finally:
        current_unit.reset(token)
    assert state.calls is None and state.breakdown is None
    http_client.uninstall()
    requests.get(upstream.url("/"), timeout=10)
    client.flush()
    assert calls(metrics) == []
    assert upstream.requests == 2


def test_hosts_are_capped_and_the_rest_is_other() -> None:
    addresses = Addresses(limit=2)
    assert addresses.tag("a.example", 443, "https") == ("a.example", "443")
    assert addresses.tag("B.example", None, "https") == ("b.example", "443")
    assert addresses.tag("[::1]", 8000, "http") == ("::1", "8000") or addresses.folded == 1
    assert addresses.tag("tenant-9.example", None, "http") == (schema.OTHER, schema.OTHER)
    assert addresses.tag("a.example", 443, "https") == ("a.example", "443")  # known: kept
    assert addresses.folded == 2


def test_method_tags_are_bounded() -> None:
    route = schema.TagCache().route("r/")
    methods = [route.client_call(("h", "80"), m, 200, None)[schema.METHOD]
               for m in ("get", b"POST", "BREW", b"\xff")]  # fmt: skip
    assert methods == ["GET", "POST", schema.OTHER, schema.OTHER]


def test_installing_is_idempotent_and_reversible(measured: object) -> None:
    wrapped = urllib3.HTTPConnectionPool.urlopen
    http_client.install(outside=lambda: None)
    assert urllib3.HTTPConnectionPool.urlopen is wrapped and http_client.installed()
    http_client.uninstall()
    assert not hasattr(urllib3.HTTPConnectionPool.urlopen, "__zibrato_patch__")
    assert not http_client.installed()


def test_beside_opentelemetrys_requests_instrumentation_both_measure(
    measured: object, client: Zibrato, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        in_a_request(lambda: requests.get(upstream.url("/"), timeout=10), client)
        http_client.uninstall()  # ours out, OpenTelemetry's stays
        http_client.install(outside=lambda: None)  # and back
        in_a_request(lambda: requests.get(upstream.url("/"), timeout=10), client)
    finally:
        instrumentor.uninstrument()
    in_a_request(lambda: requests.get(upstream.url("/"), timeout=10), client)
    client.flush()
    assert len(exporter.get_finished_spans()) == 2
    assert len(calls(metrics)) == 3
