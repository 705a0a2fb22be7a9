"""The prometheus backend, scraped over real HTTP and parsed by prometheus_client."""

from __future__ import annotations

import bisect
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from zibrato import Zibrato
from zibrato.aggregation import Rollup, Series, distribution_stats
from zibrato.backends.prometheus import (
    CONTENT_TYPE,
    PrometheusBackend,
    bucket_list,
    label_name,
    metric_name,
)
from zibrato.broker import Broker

_addresses = itertools.count()
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{{{_LABEL}(?:,{_LABEL})*\}})? (\S+)$")


# -- helpers ---------------------------------------------------------------------------
def counter(
    name: str, total: float, tags: Mapping[str, str] | None = None, source: str | None = None
) -> Series:
    return Series(name, "counter", source, dict(tags or {}), {"sum": total, "rate": total})


def gauge(name: str, value: float, tags: Mapping[str, str] | None = None) -> Series:
    return Series(name, "gauge", None, dict(tags or {}), {"value": value})


def timed(
    name: str, values: Sequence[float], kind: str = "timer", count: int | None = None
) -> Series:
    ordered = sorted(values)
    stats = distribution_stats(ordered)
    if count is not None:  # as the aggregator reports a sampled interval
        stats["count"] = count
    return Series(name, kind, None, {}, stats, ordered)


def emit(backend: PrometheusBackend, *series: Series) -> None:
    backend.emit(Rollup(time.time(), 1.0, series))


def scrape(backend: PrometheusBackend) -> str:
    with requests.get(backend.url, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        text = response.text
    assert_valid_exposition(text)
    return text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by (sample name, sorted labels)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert isinstance(sample, Sample)
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def family_types(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def assert_valid_exposition(text: str) -> None:
    """Check what promtool would: one HELP/TYPE per family, samples grouped under it,
    sample names belonging to their family, no duplicate series, sane histograms."""
    assert text == "" or text.endswith("\n")
    typed: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split(" ")[2]
            assert current not in typed, f"family {current} appears twice"
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in ("counter", "gauge", "histogram")
            typed[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed sample line {line!r}"
        name, labels = match.group(1), match.group(2) or ""
        assert current is not None
        allowed = {current}
        if typed[current] == "histogram":
            allowed = {f"{current}_bucket", f"{current}_sum", f"{current}_count"}
        assert name in allowed, f"{name} does not belong to family {current}"
        assert (name, labels) not in seen, f"duplicate series {line!r}"
        seen.add((name, labels))
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        by_series: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
        for sample in family.samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            by_series.setdefault(key, []).append(sample)
        for group in by_series.values():
            buckets = [s.value for s in group if s.name.endswith("_bucket")]
            assert buckets == sorted(buckets), "bucket counts must be cumulative"
            count = [s.value for s in group if s.name.endswith("_count")]
            assert group[len(buckets) - 1].labels["le"] == "+Inf" and count == [buckets[-1]]


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[PrometheusBackend]:
    kwargs = getattr(request, "param", {})
    backend = PrometheusBackend(
        connect=f"inproc://zibrato-prometheus-test-{next(_addresses)}",
        listen="127.0.0.1:0",
        flush_interval=60.0,
        **kwargs,
    )
    backend.start()
    yield backend
    backend.stop()


# -- naming ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("http.server.request.duration", "timer", "http_server_request_duration_seconds"),
        ("render_seconds", "timer", "render_seconds"),
        ("orders.placed", "counter", "orders_placed_total"),
        ("orders_total", "counter", "orders_total"),
        ("queue.depth", "gauge", "queue_depth"),
        ("basket.size", "distribution", "basket_size"),
        ("9lives", "gauge", "_9lives"),
        ("café-hits/s", "gauge", "caf__hits_s"),
        ("job:rate", "gauge", "job_rate"),  # colons are for recording rules only
    ],
)
def test_metric_names_are_sanitised(name: str, kind: str, expected: str) -> None:
    assert metric_name(name, kind) == expected


def test_label_names_are_sanitised() -> None:
    assert label_name("http.method") == "http_method"
    assert label_name("2xx") == "_2xx"
    assert label_name("__meta") == "_meta"
    assert label_name("le") == "le"
    assert label_name("le", histogram=True) == "exported_le"


def test_bucket_list_parses_and_validates() -> None:
    assert bucket_list("1, .5,1,+Inf") == (0.5, 1.0)
    assert bucket_list([2, 1]) == (1.0, 2.0)
    for bad in ("", "1,nan", "x"):
        with pytest.raises(ValueError):
            bucket_list(bad)


# -- the exposition --------------------------------------------------------------------
def test_empty_exposition_before_the_first_flush(backend: PrometheusBackend) -> None:
    assert scrape(backend) == ""


def test_counters_are_cumulative_and_gauges_keep_the_latest(backend: PrometheusBackend) -> None:
    emit(backend, counter("orders.placed", 3, {"shop": "eu"}), gauge("queue.depth", 7))
    emit(
        backend,
        counter("orders.placed", 4, {"shop": "eu"}),
        counter("orders.placed", 1),
        gauge("queue.depth", 2),
    )
    emit(backend)  # an interval without events keeps the totals
    text = scrape(backend)
    found = samples(text)
    assert found["orders_placed_total", (("shop", "eu"),)] == 7
    assert found["orders_placed_total", ()] == 1
    assert found["queue_depth", ()] == 2
    assert family_types(text) == {"orders_placed": "counter", "queue_depth": "gauge"}
    assert text.count("# TYPE orders_placed_total counter\n") == 1
    assert "# HELP orders_placed_total zibrato counter orders.placed\n" in text


def test_histogram_buckets_are_cumulative_and_match_the_values(
    backend: PrometheusBackend,
) -> None:
    first, second = [0.003, 0.02, 0.02, 0.3, 7.0, 12.0], [0.004, 0.6, 30.0]
    emit(backend, timed("http.server.request.duration", first))
    emit(backend, timed("http.server.request.duration", second))
    text = scrape(backend)
    found = samples(text)
    name = "http_server_request_duration_seconds"
    assert family_types(text)[name] == "histogram"
    every = sorted(first + second)
    for bound in backend.buckets:
        le = repr(float(bound))
        assert found[f"{name}_bucket", (("le", le),)] == bisect.bisect_right(every, bound), le
    assert found[f"{name}_bucket", (("le", "+Inf"),)] == len(every)
    assert found[f"{name}_count", ()] == len(every)
    assert found[f"{name}_sum", ()] == pytest.approx(sum(every))


@pytest.mark.parametrize("backend", [{"distribution_buckets": "10,100"}], indirect=True)
def test_distributions_are_unitless_histograms_with_their_own_buckets(
    backend: PrometheusBackend,
) -> None:
    emit(backend, timed("basket.size", [1, 5, 50, 500], kind="distribution"))
    found = samples(scrape(backend))
    assert found["basket_size_bucket", (("le", "10.0"),)] == 2
    assert found["basket_size_bucket", (("le", "100.0"),)] == 3
    assert found["basket_size_bucket", (("le", "+Inf"),)] == 4
    assert found["basket_size_sum", ()] == 556


def test_sampled_timer_buckets_scale_to_the_exact_count(backend: PrometheusBackend) -> None:
    # 100 values kept of 1000 seen: half of the sample at 0.01 s, half at 1 s.
    emit(backend, timed("render", [0.01] * 50 + [1.0] * 50, count=1000))
    found = samples(scrape(backend))
    assert found["render_seconds_count", ()] == 1000
    assert found["render_seconds_bucket", (("le", "0.01"),)] == 500
    assert found["render_seconds_bucket", (("le", "0.5"),)] == 500
    assert found["render_seconds_bucket", (("le", "1.0"),)] == 1000


def test_labels_are_escaped_sanitised_and_include_the_source(
    backend: PrometheusBackend,
) -> None:
    tricky = 'say "hi"\\now\nthen'
    emit(
        backend,
        counter("hits", 1, {"http.method": tricky, "2xx": "y", "__meta": "m"}, source="web-1"),
    )
    text = scrape(backend)
    assert r'http_method="say \"hi\"\\now\nthen"' in text
    labels = (("_2xx", "y"), ("_meta", "m"), ("http_method", tricky), ("source", "web-1"))
    assert samples(text)["hits_total", labels] == 1


def test_a_tag_named_le_does_not_break_a_histogram(backend: PrometheusBackend) -> None:
    series = timed("render", [0.2])
    emit(backend, Series(series.name, "timer", None, {"le": "x"}, series.stats, series.values))
    found = samples(scrape(backend))
    assert found["render_seconds_count", (("exported_le", "x"),)] == 1


def test_a_name_used_with_two_types_keeps_the_first(backend: PrometheusBackend) -> None:
    emit(
        backend,
        gauge("jobs.total", 5),
        counter("jobs", 2),
        timed("lag", [0.1]),
        gauge("lag.seconds.count", 3),
    )
    text = scrape(backend)
    assert family_types(text) == {"jobs_total": "gauge", "lag_seconds": "histogram"}
    assert backend.name_conflicts == 2
    assert backend.target_errors == 2


@pytest.mark.parametrize("backend", [{"max_series": 3}], indirect=True)
def test_exposed_series_are_capped_dropping_the_least_recently_updated(
    backend: PrometheusBackend,
) -> None:
    emit(backend, *(gauge(f"g{i}", i) for i in range(4)))
    emit(backend, gauge("g0", 10), gauge("g4", 4))
    found = samples(scrape(backend))
    assert found == {("g0", ()): 10, ("g3", ()): 3, ("g4", ()): 4}
    assert backend.evicted_series == 3


def test_other_paths_are_404(backend: PrometheusBackend) -> None:
    for path in ("/", "/metricsx", "/favicon.ico"):
        with requests.get(backend.url.replace("/metrics", path), timeout=5) as response:
            assert response.status_code == 404
    with requests.get(backend.url + "?name[]=x", timeout=5) as response:
        assert response.status_code == 200


def test_stop_closes_the_server(backend: PrometheusBackend) -> None:
    url = backend.url
    backend.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2).close()


def test_listen_must_be_host_and_port() -> None:
    for bad in ("9102", "localhost:http", "localhost:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            PrometheusBackend(listen=bad)


# `make test` puts Prometheus' own promtool next to the venv's python (.ci/get-promtool).
PROMTOOL = shutil.which("promtool") or os.path.join(os.path.dirname(sys.executable), "promtool")


def test_promtool_accepts_the_exposition(backend: PrometheusBackend) -> None:
    assert os.access(PROMTOOL, os.X_OK), "promtool is missing: run `make test` (it installs it)"
    emit(
        backend,
        counter("orders.placed", 3, {"shop": "eu"}),
        gauge("queue.depth", 7),
        gauge("job:rate", 1),  # colons are rejected by promtool: they must be gone
        timed("http.request", [0.1, 0.2]),
        timed("basket.size", [3], kind="distribution"),
    )
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=scrape(backend),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- end to end --------------------------------------------------------------------------
def test_end_to_end_through_the_broker() -> None:
    broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    frontend, backend_address = broker.start()
    backend = PrometheusBackend(connect=backend_address, flush_interval=0.2, listen="127.0.0.1:0")
    client = None
    try:
        backend.start()
        client = Zibrato(frontend)
        client.incr("orders.placed", 2, tags={"shop": "eu"})
        client.incr("orders.placed", 3, tags={"shop": "eu"})
        client.timing("orders.load", 0.02)
        client.gauge("queue.depth", 5)
        client.flush(timeout=5)
        wanted = {
            ("orders_placed_total", (("shop", "eu"),)): 5,
            ("orders_load_seconds_count", ()): 1,
            ("orders_load_seconds_bucket", (("le", "0.025"),)): 1,
            ("queue_depth", ()): 5,
        }
        deadline = time.monotonic() + 10
        found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:
            found = samples(scrape(backend))
            if all(found.get(key) == value for key, value in wanted.items()):
                break
            time.sleep(0.05)
        assert {key: found.get(key) for key in wanted} == wanted
        health = ("zibrato_backend_events_total", (("backend", "prometheus"),))
        assert found[health] >= 4
    finally:
        if client is not None:
            client.close()
        backend.stop()
        broker.stop()
