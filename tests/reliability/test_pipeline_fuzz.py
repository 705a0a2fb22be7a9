"""Arbitrary msgpack, as a peer might send it, through decode -> aggregate -> summarize ->
every built-in backend's emit, each against a real loopback target.

A payload either fails to decode (counted as a bad message) or its bad events are counted;
whatever is left must aggregate, summarize and emit without an exception, and every target
must receive something it can parse (strict JSON, a valid Prometheus exposition).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from reliability_support import scaled

from zibrato import protocol
from zibrato.aggregation import Aggregator
from zibrato.backends.base import Backend
from zibrato.backends.console import ConsoleBackend
from zibrato.backends.graphite import GraphiteBackend
from zibrato.backends.jsonl import JsonLinesBackend
from zibrato.backends.librato import LibratoBackend
from zibrato.backends.prometheus import PrometheusBackend
from zibrato.backends.statsd import StatsdBackend


def _strict(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Targets:
    """Loopback targets: a UDP sink, a TCP sink, an HTTP server that checks its bodies."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.1)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.tcp.settimeout(0.1)
        targets = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    posted = json.loads(body, parse_constant=_strict)
                    assert all(math.isfinite(v) for g in posted["gauges"] for v in _numbers(g))
                except Exception as exc:
                    targets.errors.append(f"librato body: {exc!r}")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True),
            threading.Thread(target=self._drain_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _drain_udp(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.udp.recv(65536)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            threading.Thread(target=self._read_all, args=(conn,), daemon=True).start()

    def _read_all(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if not conn.recv(65536):
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.http.shutdown()
        self.http.server_close()
        for thread in self._threads:
            thread.join(5)
        self.udp.close()
        self.tcp.close()


def _numbers(gauge: dict[str, Any]) -> list[float]:
    return [value for key, value in gauge.items() if key not in ("name", "source")]


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    made = Targets()
    yield made
    made.close()


@pytest.fixture(scope="module")
def backends(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    jsonl_path = tmp_path_factory.mktemp("fuzz") / "out.jsonl"
    made: list[Backend] = [
        ConsoleBackend(stream=io.StringIO(), health=True),
        JsonLinesBackend(path=str(jsonl_path)),
        StatsdBackend(address=f"127.0.0.1:{targets.udp.getsockname()[1]}"),
        GraphiteBackend(address=f"127.0.0.1:{targets.tcp.getsockname()[1]}", timeout=2.0),
        PrometheusBackend(listen="127.0.0.1:0"),  # not started: emit renders the exposition
        LibratoBackend(
            url=f"http://127.0.0.1:{targets.http.server_address[1]}",
            email="fuzz@example.com",
            token="fuzz-token",
            timeout=2.0,
            flush_interval=2.0,
        ),
    ]
    yield made
    for backend in made:
        backend.close_target()


# -- what a peer may send ---------------------------------------------------------------------
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
_scalars = (
    st.none()
    | st.booleans()
    | _ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=1e300, max_value=1.7e308)
    | st.floats(max_value=-1e300, min_value=-1.7e308)
    | st.text(max_size=12)
    | st.binary(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=12,
)
_names = st.sampled_from(["fuzz.a", "fuzz.b", "zibrato.publisher.dropped", "a b", ""]) | _values
_tags = st.none() | st.dictionaries(
    st.sampled_from(["a.b", "a_b", "le", "source", "__x", "k"]) | st.text(max_size=4),
    st.text(max_size=6) | _values,
    max_size=4,
)
_kinds = (
    st.sampled_from([0, 1, 2, 3, 4]) | st.sampled_from([5, -1, 0.0, 3.0, True, False]) | _values
)
_measures = (
    st.sampled_from([1e308, -1e308, 1.7e308, 5e-324, 0, -(2**63), 2**64 - 1])
    | _ints
    | st.floats(allow_nan=True, allow_infinity=True)
)
_events = st.lists(
    st.tuples(
        _kinds,
        _names,
        _measures | _values,
        st.none() | st.sampled_from(["web-1", "with space"]) | _values,
        _tags,
    ).map(list)
    | _values,
    max_size=8,
)
_valid_headers = st.tuples(
    st.just(1),
    st.text(min_size=1, max_size=20),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none() | st.sampled_from(["web-1", "src"]),
    st.none() | st.dictionaries(st.sampled_from(["app", "a.b", "le"]), st.text(max_size=5)),
)
_any_headers = st.tuples(
    st.just(1) | _values,
    st.text(max_size=70) | _values,
    _ints | _values,
    _ints | _values,
    st.floats(allow_nan=True, allow_infinity=True) | _ints | _values,
    st.none() | st.text(max_size=8) | _values,
    _tags,
)
# Mostly a well-formed envelope (so that the events reach aggregation), sometimes not.
_batches = st.tuples(_valid_headers | _valid_headers | _any_headers, _events).map(
    lambda parts: [*parts[0], parts[1]]
)
_payloads = (_batches | _batches | _values).map(msgpack.packb)
_topics = st.sampled_from([b"debug", b"info", b"warning", b"error", b"crit", b"infox", b""])
_messages = st.lists(st.tuples(_topics, _payloads).map(list), min_size=1, max_size=4)


@settings(
    max_examples=scaled(200, 3000),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(messages=_messages)
def test_any_payload_through_decode_aggregate_summarize_and_every_emit(
    messages: list[list[bytes]], backends: list[Backend], targets: Targets
) -> None:
    aggregator = Aggregator(max_series=50)
    for frames in messages:
        try:
            batch = protocol.decode(frames)
        except protocol.DecodeError:
            continue
        aggregator.add(batch)
    assert "internal_error" not in aggregator.rejected
    rollup = aggregator.rollup(now=1_700_000_000.0, interval=1.0)
    for backend in backends:
        backend.emit(rollup)  # raises only for a target that fails: none here
    assert targets.errors == []
    prometheus = next(b for b in backends if isinstance(b, PrometheusBackend))
    list(text_string_to_metric_families(prometheus.exposition().decode()))
    jsonl = next(b for b in backends if isinstance(b, JsonLinesBackend))
    for line in Path(jsonl.path).read_text(encoding="utf-8").splitlines()[-len(rollup.series) :]:
        json.loads(line, parse_constant=_strict)
    for backend in backends:
        # A name that two metric types map to is a counted conflict in Prometheus; else
        # no target may have failed.
        allowed = backend.name_conflicts if isinstance(backend, PrometheusBackend) else 0
        assert backend.target_errors == allowed, (backend.kind, vars(backend).get("last_error"))
