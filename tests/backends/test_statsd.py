"""The statsd backend, checked on a real UDP socket on 127.0.0.1."""

from __future__ import annotations

import inspect
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from backend_support import backend_maker
from hypothesis import given, settings
from hypothesis import strategies as st

from zibrato import Zibrato
from zibrato.aggregation import Rollup, Series
from zibrato.backends import load
from zibrato.backends.statsd import StatsdBackend, packets
from zibrato.backends.toolkit.naming import format_number, parse_address
from zibrato.broker import Broker

WAIT = 5.0  # the longest any test waits for a packet


@pytest.fixture
def server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def make_backend(server: socket.socket) -> Iterator[Callable[..., StatsdBackend]]:
    address = f"127.0.0.1:{server.getsockname()[1]}"
    # A short flush interval keeps the pacing of larger flushes short (it is half of it).
    yield from backend_maker(
        StatsdBackend, connect="tcp://127.0.0.1:1", address=address, flush_interval=0.2
    )


def receive_packets(sock: socket.socket, lines: int, timeout: float = WAIT) -> list[bytes]:
    """Receive packets until they hold ``lines`` lines in all, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    received: list[bytes] = []
    while sum(len(p.split(b"\n")) for p in received) < lines:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"expected {lines} lines, got {received!r}")
        sock.settimeout(remaining)
        try:
            received.append(sock.recv(65536))
        except TimeoutError:
            continue
    return received


def receive_lines(sock: socket.socket, lines: int) -> list[str]:
    packets = receive_packets(sock, lines)
    return [line.decode() for packet in packets for line in packet.split(b"\n")]


def assert_quiet(sock: socket.socket, wait: float = 0.05) -> None:
    sock.settimeout(wait)
    with pytest.raises(TimeoutError):
        sock.recv(65536)


def rollup(*series: Series) -> Rollup:
    return Rollup(1_700_000_000.5, 10.0, series)


def counter(name: str, total: float, **tags: str) -> Series:
    return Series(name, "counter", None, tags, {"sum": total, "rate": total / 10})


def gauge(name: str, value: float) -> Series:
    return Series(name, "gauge", None, {}, {"value": value})


def values_series(
    kind: str,
    name: str,
    values: list[float],
    count: int | None = None,
    tags: dict[str, str] | None = None,
) -> Series:
    stats = {"count": float(count if count is not None else len(values))}
    return Series(name, kind, None, tags or {}, stats, sorted(values))


# -- semantics ---------------------------------------------------------------------------
def test_counters_send_the_interval_sum(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    make_backend().emit(rollup(counter("orders", 5), counter("bytes", 1.5)))
    assert receive_lines(server, 2) == ["orders:5|c", "bytes:1.5|c"]


def test_gauges_and_negative_gauges(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    make_backend().emit(rollup(gauge("temp", 21.5), gauge("zero", 0), gauge("balance", -5)))
    packets = receive_packets(server, 4)
    assert packets == [b"temp:21.5|g\nzero:0|g\nbalance:0|g\nbalance:-5|g"]


def test_negative_gauge_lines_share_a_packet(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    # max_packet leaves room for one line only, yet the 0 and the -5 must travel together.
    make_backend(max_packet=12).emit(rollup(gauge("b", -5), gauge("c", 1)))
    assert receive_packets(server, 3) == [b"b:0|g\nb:-5|g", b"c:1|g"]


def test_timers_send_every_value_in_milliseconds(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    timer = values_series("timer", "load", [0.012345, 0.001, 0.5, 0.5, 2])
    make_backend().emit(rollup(timer))
    assert receive_lines(server, 5) == [
        "load:1|ms",
        "load:12.345|ms",
        "load:500|ms",
        "load:500|ms",
        "load:2000|ms",
    ]


def test_sampled_timers_carry_the_sample_rate(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    timer = values_series("timer", "load", [0.1, 0.2], count=8)
    make_backend().emit(rollup(timer))
    assert receive_lines(server, 2) == ["load:100|ms|@0.25", "load:200|ms|@0.25"]


def test_distributions_go_as_timers_to_etsy_statsd_unscaled(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    # Etsy statsd counts |h and |d lines as counters: |ms is the type it keeps values of.
    dist = values_series("distribution", "size", [3, 1500.5])
    make_backend().emit(rollup(dist))
    assert receive_lines(server, 2) == ["size:3|ms", "size:1500.5|ms"]


def test_distributions_go_as_dogstatsd_distributions_with_dogstatsd_tags(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    dist = values_series("distribution", "delta", [-2, 3], count=4, tags={"k": "v"})
    make_backend(tag_style="dogstatsd").emit(rollup(dist))
    assert receive_lines(server, 2) == ["delta:-2|d|@0.5|#k:v", "delta:3|d|@0.5|#k:v"]


def test_negative_timings_are_sent_as_zero_and_counted(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    backend = make_backend()
    backend.emit(rollup(values_series("timer", "skew", [-0.005, -0.0, 0.002])))
    assert receive_lines(server, 3) == ["skew:0|ms", "skew:0|ms", "skew:2|ms"]
    assert backend.clamped_values == 1
    backend.emit(rollup(values_series("distribution", "size", [-1])))
    assert receive_lines(server, 1) == ["size:0|ms"]
    assert backend.clamped_values == 2
    lines = [line for line in backend.lines(backend.flush()) if "clamped_values" in line]
    assert lines == ["zibrato.backend.clamped_values.backend.statsd:2|c"]


def test_busy_series_send_a_sample_at_most_max_sent_values_with_the_rate(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    values = [i / 1000 for i in range(1, 501)]
    backend = make_backend(max_sent_values=100)
    backend.emit(rollup(values_series("timer", "busy", values)))
    lines = receive_lines(server, 100)
    assert all(line.endswith("|ms|@0.2") for line in lines)
    sent = [float(line.split(":")[1].split("|")[0]) for line in lines]
    assert len(set(sent)) == 100 and set(sent) <= {v * 1000 for v in values} | set(range(501))
    assert backend.unsent_values == 400
    assert_quiet(server)


def test_the_sample_rate_composes_with_the_aggregators_own_sampling(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    # 40 values kept of 400 recorded (aggregator or client sampling), 10 sent: 10 / 400.
    series = values_series("timer", "busy", [i / 100 for i in range(40)], count=400)
    make_backend(max_sent_values=10).emit(rollup(series))
    lines = receive_lines(server, 10)
    assert all(line.endswith("|ms|@0.025") for line in lines)
    assert_quiet(server)


def test_max_sent_values_zero_sends_every_value(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    backend = make_backend(max_sent_values=0)
    backend.emit(rollup(values_series("timer", "all", [i / 1000 for i in range(3000)])))
    lines = receive_lines(server, 3000)
    assert len(lines) == 3000 and not any("@" in line for line in lines)
    assert backend.unsent_values == 0


def test_health_series_go_first(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    backend = make_backend()
    backend.aggregator.add_events([(0, "orders", 1, None, None), (3, "load", 0.1, None, None)])
    rendered = backend.lines(backend.flush())
    health = [i for i, line in enumerate(rendered) if line.startswith("zibrato.backend.")]
    assert health == list(range(len(health))) and len(health) >= 5
    assert rendered[len(health) :] == ["orders:1|c", "load:100|ms"]
    assert receive_lines(server, len(rendered)) == rendered


# -- names and tags ----------------------------------------------------------------------
def test_tags_fold_into_the_name(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    timer = values_series(
        "timer",
        "http.server.request.duration",
        [0.25],
        tags={"method": "GET", "http.route": "/orders"},
    )
    make_backend().emit(rollup(timer))
    assert receive_lines(server, 1) == [
        "http.server.request.duration.http_route._orders.method.GET:250|ms"
    ]


def test_name_parts_cannot_break_the_line_format(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    nasty = Series(
        "a:b|c#d..é",
        "counter",
        "web 1.eu",
        {"k|:": "v.a:l|u e#@,", "e": ""},
        {"sum": 1, "rate": 0.1},
    )
    make_backend(prefix="my app.").emit(rollup(nasty))
    assert receive_lines(server, 1) == ["my_app.a_b_c_d._.e._.k__.v_a_l_u_e___.source.web_1_eu:1|c"]


def test_source_becomes_the_source_tag(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    series = Series(
        "hits", "counter", "web-1", {"source": "ignored", "app": "shop"}, {"sum": 2, "rate": 0.2}
    )
    make_backend().emit(rollup(series))
    assert receive_lines(server, 1) == ["hits.app.shop.source.web-1:2|c"]


def test_dogstatsd_tags(make_backend: Callable[..., StatsdBackend], server: socket.socket) -> None:
    hits = Series(
        "hits", "counter", "web-1", {"route": "/a,b|c#d", "method": "GET"}, {"sum": 2, "rate": 0.2}
    )
    timer = values_series("timer", "load", [0.1], count=2, tags={"method": "GET"})
    make_backend(tag_style="dogstatsd", prefix="shop").emit(rollup(hits, timer, gauge("g", 1)))
    assert receive_lines(server, 3) == [
        "shop.hits:2|c|#method:GET,route:/a_b_c_d,source:web-1",
        "shop.load:100|ms|@0.5|#method:GET",
        "shop.g:1|g",
    ]


# -- packets -----------------------------------------------------------------------------
def test_many_lines_per_packet_never_above_max_packet(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    series = [counter(f"requests.{i}", i) for i in range(300)]
    make_backend(max_packet=200).emit(rollup(*series))
    received = receive_packets(server, 300)
    assert all(len(packet) <= 200 for packet in received)
    assert len(received) < 100  # about ten lines per packet
    lines = [line.decode() for packet in received for line in packet.split(b"\n")]
    assert lines == [f"requests.{i}:{i}|c" for i in range(300)]


def test_default_packets_fit_the_default_max(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    timer = values_series("timer", "load", [i / 1000 for i in range(2000)])
    make_backend(max_sent_values=0).emit(rollup(timer))
    received = receive_packets(server, 2000)
    assert all(len(packet) <= 1432 for packet in received)
    assert 2 < len(received) < 200


def test_a_line_longer_than_max_packet_goes_alone(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    long_name = "x" * 100
    make_backend(max_packet=50).emit(
        rollup(counter("a", 1), counter(long_name, 2), counter("b", 3))
    )
    assert receive_packets(server, 3) == [b"a:1|c", f"{long_name}:2|c".encode(), b"b:3|c"]


def test_packets_joins_greedily() -> None:
    assert list(packets(["aaa", "bb", "c", "dddd"], 6)) == [b"aaa\nbb", b"c\ndddd"]
    assert list(packets([], 6)) == []


# -- pacing ------------------------------------------------------------------------------
def test_packets_are_spread_over_half_the_flush_interval(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    series = [counter(f"c{i:03d}", i) for i in range(40)]
    backend = make_backend(max_packet=10, flush_interval=2.0)
    sender = threading.Thread(target=backend.emit, args=(rollup(*series),))  # 40 packets
    sender.start()
    try:
        arrivals = []
        for _ in range(40):
            receive_packets(server, 1)
            arrivals.append(time.monotonic())
    finally:
        sender.join(WAIT)
    assert arrivals[-1] - arrivals[0] >= 0.5  # the last is due 0.975 s after the first


def test_stopping_sends_what_is_left_at_once(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    backend = make_backend(max_packet=10, flush_interval=120.0)  # a 60 s pacing window
    series = [counter(f"c{i:03d}", i) for i in range(200)]
    sender = threading.Thread(target=backend.emit, args=(rollup(*series),))
    sender.start()
    try:
        receive_packets(server, 16)  # the burst; the next packet is due 4.8 s later
        backend.stop_event.set()
        assert len(receive_packets(server, 200 - 16)) == 200 - 16  # well before 60 s
        sender.join(WAIT)
        assert not sender.is_alive()
    finally:
        backend.stop_event.set()
        sender.join(WAIT * 2)


# -- network failures --------------------------------------------------------------------
def test_refused_packets_are_counted_not_raised() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    backend = StatsdBackend(connect="tcp://127.0.0.1:1", address=f"127.0.0.1:{port}", max_packet=20)
    try:
        deadline = time.monotonic() + WAIT
        while backend.target_errors == 0 and time.monotonic() < deadline:
            backend.emit(rollup(*(counter(f"c{i}", i) for i in range(10))))
            time.sleep(0.01)
        assert backend.target_errors >= 1
    finally:
        backend.close_target()


def test_close_target_is_idempotent(
    make_backend: Callable[..., StatsdBackend], server: socket.socket
) -> None:
    backend = make_backend()
    backend.close_target()  # before any socket exists
    backend.emit(rollup(counter("a", 1)))
    backend.close_target()
    backend.close_target()
    backend.emit(rollup(counter("b", 1)))  # a later emit opens a new socket
    assert receive_lines(server, 2) == ["a:1|c", "b:1|c"]


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_address() -> None:
    try:
        server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    backend = StatsdBackend(connect="tcp://127.0.0.1:1", address=f"[::1]:{server.getsockname()[1]}")
    try:
        backend.emit(rollup(counter("v6", 1)))
        assert receive_lines(server, 1) == ["v6:1|c"]
    finally:
        backend.close_target()
        server.close()


# -- configuration -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8125", ("127.0.0.1", 8125)),
        ("stats.local:9000", ("stats.local", 9000)),
        ("stats.local", ("stats.local", 8125)),
        ("[::1]:8126", ("::1", 8126)),
        ("[::1]", ("::1", 8125)),
        ("::1", ("::1", 8125)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address, default_port=8125) == expected


@pytest.mark.parametrize("address", ["", ":8125", "host:port", "host:70000", "[::1", "[::1]x"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(address, default_port=8125)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="tag_style"):
        StatsdBackend(tag_style="influx")
    with pytest.raises(ValueError, match="max_packet"):
        StatsdBackend(max_packet=0)
    with pytest.raises(ValueError, match="max_sent_values"):
        StatsdBackend(max_sent_values=-1)


def test_options_match_the_constructor() -> None:
    cls = load("statsd")
    assert cls is StatsdBackend
    parameters = inspect.signature(cls.__init__).parameters
    for option in cls.options:
        assert parameters[option.dest].default == option.default
    assert repr(cls(address="10.0.0.1:8125")).startswith("<StatsdBackend connect=")


def test_format_number() -> None:
    assert [format_number(v) for v in (0, -0.0, 7, 2**60, 0.1 + 0.2, 1e-5, -2.5e20)] == [
        "0",
        "0",
        "7",
        "1152921504606846976",
        "0.3",
        "0.00001",
        "-250000000000000000000",
    ]


# -- end to end --------------------------------------------------------------------------
def test_end_to_end_through_the_broker(server: socket.socket) -> None:
    broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    frontend, backend_address = broker.start()
    backend = StatsdBackend(
        connect=backend_address, flush_interval=0.2, address=f"127.0.0.1:{server.getsockname()[1]}"
    )
    backend.start()
    z = Zibrato(frontend)
    try:
        z.incr("orders", 3, tags={"method": "GET"})
        z.timing("load", 0.25)
        z.gauge("balance", -4)
        z.flush()
        wanted = {"orders.method.GET:3|c", "load:250|ms", "balance:0|g", "balance:-4|g"}
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while not wanted <= seen and time.monotonic() < deadline:
            server.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                seen.update(server.recv(65536).decode().split("\n"))
            except TimeoutError:
                break
        assert wanted <= seen
        assert any(line.startswith("zibrato.backend.events.backend.statsd:") for line in seen)
    finally:
        z.close()
        backend.stop()
        broker.stop()


# -- fuzz: whatever a caller names or records, every line is well formed ------------------
_NUMBER = r"-?\d+(?:\.\d+)?"
_RATE = r"(?:\|@(?:1|0\.\d+))?"
NAME_STYLE_LINE = re.compile(rf"[A-Za-z0-9_.\-]+:{_NUMBER}\|(?:c|g|ms){_RATE}")
DOGSTATSD_LINE = re.compile(
    rf"[A-Za-z0-9_.\-]+:{_NUMBER}\|(?:c|g|ms|d){_RATE}"
    r"(?:\|#[A-Za-z0-9_./\-]+:[A-Za-z0-9_./:\-]+(?:,[A-Za-z0-9_./\-]+:[A-Za-z0-9_./:\-]+)*)?"
)
texts = st.text(min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    name=texts,
    tags=st.dictionaries(texts, st.text(max_size=10), max_size=3),
    source=st.none() | texts,
    kind=st.sampled_from(["counter", "gauge", "timer", "distribution"]),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=5),
    extra=st.integers(min_value=0, max_value=10),
    style=st.sampled_from(["name", "dogstatsd"]),
)
def test_any_name_tags_and_value_make_well_formed_lines(
    name: str,
    tags: dict[str, str],
    source: str | None,
    kind: str,
    values: list[float],
    extra: int,
    style: str,
) -> None:
    if kind == "counter":
        stats: dict[str, float] = {"sum": values[0], "rate": values[0]}
    elif kind == "gauge":
        stats = {"value": values[0]}
    else:
        stats = {"count": len(values) + extra}
    series = Series(name, kind, source, tags, stats, sorted(values) if "count" in stats else ())
    backend = StatsdBackend(connect="tcp://127.0.0.1:1", tag_style=style, max_sent_values=3)
    grammar = NAME_STYLE_LINE if style == "name" else DOGSTATSD_LINE
    for line in backend.lines(rollup(series)):
        for part in line.split("\n"):  # a negative gauge's two lines travel together
            assert grammar.fullmatch(part), part
            assert part.split("|")[1] != "ms" or not part.split(":")[1].startswith("-")
