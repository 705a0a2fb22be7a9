"""The graphite backend, checked against a real TCP listener on 127.0.0.1."""

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
from zibrato.aggregation import Rollup, Series, distribution_stats
from zibrato.backends import load
from zibrato.backends.graphite import BACKOFF_FIRST, BACKOFF_MAX, GraphiteBackend
from zibrato.broker import Broker

WAIT = 5.0  # the longest any test waits for a connection or a line
STAMP = 1_700_000_000


class Carbon:
    """A carbon stand-in: accepts connections and reads plaintext lines."""

    def __init__(self, port: int = 0, rcvbuf: int | None = None) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:  # inherited by accepted connections
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.port: int = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._buffer = b""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def accept(self, timeout: float = WAIT) -> socket.socket:
        self.listener.settimeout(timeout)
        conn, _ = self.listener.accept()
        self.connections.append(conn)
        self._buffer = b""
        return conn

    def read_lines(self, count: int, timeout: float = WAIT) -> list[str]:
        """Read ``count`` lines from the newest connection (accepting one if needed)."""
        deadline = time.monotonic() + timeout
        conn = self.connections[-1] if self.connections else self.accept(timeout)
        while self._buffer.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"expected {count} lines, got {self._buffer!r}")
            conn.settimeout(remaining)
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                pytest.fail(f"connection closed after {self._buffer!r}")
            self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n", count)
        return [line.decode() for line in lines]

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.connections = []
        self.listener.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def carbon() -> Iterator[Carbon]:
    server = Carbon()
    yield server
    server.close()


@pytest.fixture
def make_backend(carbon: Carbon) -> Iterator[Callable[..., GraphiteBackend]]:
    yield from backend_maker(GraphiteBackend, connect="tcp://127.0.0.1:1", address=carbon.address)


def rollup(*series: Series, at: int = STAMP) -> Rollup:
    return Rollup(at + 0.9, 10.0, series)


def counter(name: str, total: float, source: str | None = None, **tags: str) -> Series:
    return Series(name, "counter", source, tags, {"sum": total, "rate": total / 10})


def gauge(name: str, value: float) -> Series:
    return Series(name, "gauge", None, {}, {"value": value})


def values_series(name: str, values: list[float]) -> Series:
    return Series(name, "timer", None, {}, distribution_stats(sorted(values)), sorted(values))


def timer(name: str, **tags: str) -> Series:
    stats = {
        "count": 4,
        "sum": 1.0,
        "min": 0.1,
        "max": 0.4,
        "mean": 0.25,
        "median": 0.25,
        "stddev": 0.1118,
        "sum_squares": 0.3,
        "p90": 0.37,
        "p99_9": 0.3997,
    }
    return Series(name, "timer", None, tags, stats, (0.1, 0.2, 0.3, 0.4))


# -- lines -------------------------------------------------------------------------------
def test_counter_gauge_and_timer_paths(
    make_backend: Callable[..., GraphiteBackend], carbon: Carbon
) -> None:
    make_backend().emit(rollup(counter("orders", 5), gauge("temp", -3.5), timer("load")))
    assert carbon.read_lines(12) == [
        f"orders.count 5 {STAMP}",
        f"orders.rate 0.5 {STAMP}",
        f"temp -3.5 {STAMP}",
        f"load.count 4 {STAMP}",
        f"load.sum 1 {STAMP}",
        f"load.min 0.1 {STAMP}",
        f"load.max 0.4 {STAMP}",
        f"load.mean 0.25 {STAMP}",
        f"load.median 0.25 {STAMP}",
        f"load.stddev 0.1118 {STAMP}",  # seconds, like every timer statistic
        f"load.p90 0.37 {STAMP}",
        f"load.p99_9 0.3997 {STAMP}",
    ]


def test_tags_fold_into_the_path(
    make_backend: Callable[..., GraphiteBackend], carbon: Carbon
) -> None:
    series = counter(
        "http.server.requests", 1, "web 1", **{"http.route": "/orders", "method": "GET"}
    )
    make_backend(prefix="shop").emit(rollup(series))
    assert carbon.read_lines(2) == [
        f"shop.http.server.requests.http_route._orders.method.GET.source.web_1.count 1 {STAMP}",
        f"shop.http.server.requests.http_route._orders.method.GET.source.web_1.rate 0.1 {STAMP}",
    ]


def test_names_are_sanitised(make_backend: Callable[..., GraphiteBackend], carbon: Carbon) -> None:
    make_backend().emit(rollup(gauge("disk free;~(GB)..é", 1)))
    assert carbon.read_lines(1) == [f"disk_free___GB_._ 1 {STAMP}"]


def test_graphite_tags(make_backend: Callable[..., GraphiteBackend], carbon: Carbon) -> None:
    tags = {"route": "/a;b=c~d!e^f g", "name": "x", "a b": ""}
    series = Series("http.requests", "counter", "web-1", tags, {"sum": 2, "rate": 0.2})
    make_backend(tags=True, prefix="shop").emit(rollup(series, timer("load", method="GET")))
    lines = carbon.read_lines(11)
    assert lines[:2] == [
        f"shop.http.requests.count;a_b=_;name_=x;route=/a_b_c_d_e_f_g;source=web-1 2 {STAMP}",
        f"shop.http.requests.rate;a_b=_;name_=x;route=/a_b_c_d_e_f_g;source=web-1 0.2 {STAMP}",
    ]
    assert lines[-1] == f"shop.load.p99_9;method=GET 0.3997 {STAMP}"


# -- failures, backoff and buffering -----------------------------------------------------
def test_a_new_connection_sends_again_only_what_was_delivered_lately(carbon: Carbon) -> None:
    clock = FakeClock()
    backend = GraphiteBackend(
        connect="tcp://127.0.0.1:1", address=carbon.address, clock=clock, resend_seconds=2.0
    )
    restarted: Carbon | None = None
    try:
        for second, name in enumerate("abc"):
            backend.emit(rollup(gauge(name, second), at=STAMP + second))
            clock.now += 1.5  # deliveries 1.5 s apart: only the last two are within 2 s
        assert carbon.read_lines(3) == [f"a 0 {STAMP}", f"b 1 {STAMP + 1}", f"c 2 {STAMP + 2}"]
        carbon.close()
        restarted = Carbon(port=carbon.port)
        backend.emit(rollup(gauge("d", 3), at=STAMP + 3))  # finds the connection closed
        assert restarted.read_lines(3) == [
            f"b 1 {STAMP + 1}",
            f"c 2 {STAMP + 2}",
            f"d 3 {STAMP + 3}",
        ]
        assert backend.resent_lines == 2 and backend.dropped_lines == 0
        backend.emit(rollup(gauge("e", 4), at=STAMP + 4))  # the same connection: nothing again
        assert restarted.read_lines(1) == [f"e 4 {STAMP + 4}"]
        assert backend.resent_lines == 2
    finally:
        backend.close_target()
        if restarted is not None:
            restarted.close()


def test_reconnects_after_the_listener_restarts(carbon: Carbon) -> None:
    clock = FakeClock()
    backend = GraphiteBackend(connect="tcp://127.0.0.1:1", address=carbon.address, clock=clock)
    restarted: Carbon | None = None
    try:
        backend.emit(rollup(gauge("a", 1)))
        assert carbon.read_lines(1) == [f"a 1 {STAMP}"]
        carbon.close()  # carbon goes away, with the connection

        backend.emit(rollup(gauge("b", 2), at=STAMP + 1))
        assert backend.target_errors == 1
        assert backend.pending_lines == 1

        restarted = Carbon(port=carbon.port)
        backend.emit(rollup(gauge("c", 3), at=STAMP + 2))  # still within the backoff: no attempt
        assert backend.target_errors == 1
        assert backend.pending_lines == 2

        clock.now += BACKOFF_FIRST
        backend.emit(rollup(gauge("d", 4), at=STAMP + 3))
        # What the old carbon took last goes again first: it may never have written it.
        assert restarted.read_lines(4) == [
            f"a 1 {STAMP}",
            f"b 2 {STAMP + 1}",
            f"c 3 {STAMP + 2}",
            f"d 4 {STAMP + 3}",
        ]
        assert backend.pending_lines == 0
        assert backend.target_errors == 1
        assert backend.dropped_lines == 0 and backend.resent_lines == 1
    finally:
        backend.close_target()
        if restarted is not None:
            restarted.close()


def test_backoff_doubles_to_a_cap_and_resets(carbon: Carbon) -> None:
    clock = FakeClock()
    port = carbon.port
    carbon.close()
    backend = GraphiteBackend(connect="tcp://127.0.0.1:1", address=f"127.0.0.1:{port}", clock=clock)
    restarted: Carbon | None = None
    try:
        backend.emit(rollup(gauge("g", 1)))
        assert backend.target_errors == 1  # one refused connection
        waits = []
        for _ in range(8):  # how long until each next attempt?
            errors, waited = backend.target_errors, 0.0
            while backend.target_errors == errors and waited < 100:
                clock.now += 0.25
                waited += 0.25
                backend.emit(rollup())
            waits.append(waited)
        assert waits == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]

        restarted = Carbon(port=port)
        clock.now += BACKOFF_MAX
        backend.emit(rollup(gauge("h", 2), at=STAMP + 1))
        assert restarted.read_lines(2) == [f"g 1 {STAMP}", f"h 2 {STAMP + 1}"]
        restarted.close()
        errors = backend.target_errors
        backend.emit(rollup(gauge("i", 3), at=STAMP + 2))  # carbon closed: reconnect, fail
        assert backend.target_errors == errors + 1
        clock.now += BACKOFF_FIRST  # the success reset the backoff to its first step
        backend.emit(rollup(gauge("j", 4), at=STAMP + 3))
        assert backend.target_errors == errors + 2
    finally:
        backend.close_target()
        if restarted is not None:
            restarted.close()


def test_the_buffer_keeps_the_newest_lines(carbon: Carbon) -> None:
    clock = FakeClock()
    port = carbon.port
    carbon.close()
    backend = GraphiteBackend(
        connect="tcp://127.0.0.1:1", address=f"127.0.0.1:{port}", buffer_lines=5, clock=clock
    )
    restarted: Carbon | None = None
    try:
        for i in range(3):
            backend.emit(rollup(counter(f"c{i}", i), gauge(f"g{i}", i), at=STAMP + i))
        assert backend.pending_lines == 5
        assert backend.dropped_lines == 4
        restarted = Carbon(port=port)
        clock.now += BACKOFF_MAX
        backend.emit(rollup(at=STAMP + 3))
        assert restarted.read_lines(5) == [
            f"c1.rate 0.1 {STAMP + 1}",
            f"g1 1 {STAMP + 1}",
            f"c2.count 2 {STAMP + 2}",
            f"c2.rate 0.2 {STAMP + 2}",
            f"g2 2 {STAMP + 2}",
        ]
    finally:
        backend.close_target()
        if restarted is not None:
            restarted.close()


def test_a_listener_that_never_reads_does_not_block() -> None:
    stuck = Carbon(rcvbuf=4096)
    clock = FakeClock()
    backend = GraphiteBackend(
        connect="tcp://127.0.0.1:1",
        address=stuck.address,
        timeout=0.3,
        buffer_lines=1_000_000,
        clock=clock,
    )
    # 100 timers with 30 long tags each: 7 MB, far beyond the socket buffers.
    tags = {f"tag{i:02d}": "v" * 250 for i in range(30)}
    heavy = [timer(f"t{i}", **tags) for i in range(100)]
    try:
        for second in range(2):
            started = time.monotonic()
            backend.emit(rollup(*heavy, at=STAMP + second))
            assert time.monotonic() - started < 1.5
            clock.now += BACKOFF_MAX
        stuck.accept()  # accepted but never read
        assert backend.target_errors == 2
        assert backend.pending_lines == 1800
    finally:
        backend.close_target()
        stuck.close()
    assert backend.dropped_lines == 1800  # close_target gives up on what is left


def test_close_target_wakes_an_emit_stuck_in_send() -> None:
    stuck = Carbon(rcvbuf=4096)
    backend = GraphiteBackend(
        connect="tcp://127.0.0.1:1", address=stuck.address, timeout=30, buffer_lines=10**6
    )
    tags = {f"tag{i:02d}": "v" * 250 for i in range(30)}
    heavy = rollup(*(timer(f"t{i}", **tags) for i in range(100)))
    sender = threading.Thread(target=backend.emit, args=(heavy,))
    try:
        sender.start()
        stuck.accept()  # the backend connected; nobody reads
        time.sleep(0.2)  # let it fill the socket buffers and block in send
        started = time.monotonic()
        backend.close_target()
        sender.join(WAIT)
        assert not sender.is_alive()
        assert time.monotonic() - started < 2
        assert backend.target_errors == 1
    finally:
        sender.join(WAIT)
        backend.close_target()
        stuck.close()


def test_emit_never_raises_on_an_unreachable_target(carbon: Carbon) -> None:
    port = carbon.port
    carbon.close()
    backend = GraphiteBackend(connect="tcp://127.0.0.1:1", address=f"127.0.0.1:{port}")
    try:
        backend.flush()  # emit runs inside; a raise would count twice
        assert backend.target_errors == 1
    finally:
        backend.close_target()


# -- own health and whisper's one point per timestamp --------------------------------------
def health(name: str, total: float) -> Series:
    """A health counter as the base class makes it."""
    stats = {"sum": total, "rate": total / 10}
    return Series(f"zibrato.backend.{name}", "counter", None, {"backend": "graphite"}, stats)


def test_health_never_waits_in_the_buffer_and_goes_first(carbon: Carbon) -> None:
    clock = FakeClock()
    port = carbon.port
    carbon.close()
    backend = GraphiteBackend(
        connect="tcp://127.0.0.1:1", address=f"127.0.0.1:{port}", buffer_lines=2, clock=clock
    )
    restarted: Carbon | None = None
    try:
        # Four flushes while carbon is down, each reporting the drops of the one before.
        for second, dropped in enumerate([0, 1, 3]):
            backend.emit(
                rollup(
                    gauge("a", 1),
                    gauge("b", 2),
                    health("dropped_lines", dropped),
                    at=STAMP + second,
                )
            )
            clock.now += BACKOFF_MAX
        assert backend.pending_lines == 2  # only data waits there
        restarted = Carbon(port=port)
        backend.emit(rollup(gauge("c", 3), health("dropped_lines", 2), at=STAMP + 3))
        # Every report since the outage began, summed, stamped where the outage began.
        assert restarted.read_lines(5) == [
            f"zibrato.backend.dropped_lines.backend.graphite.count 6 {STAMP}",
            f"zibrato.backend.dropped_lines.backend.graphite.rate 0.15 {STAMP}",
            f"a 1 {STAMP + 2}",
            f"b 2 {STAMP + 2}",
            f"c 3 {STAMP + 3}",
        ]
        assert backend.dropped_lines == 4
    finally:
        backend.close_target()
        if restarted is not None:
            restarted.close()


def test_the_final_flush_is_merged_into_the_last_point(
    make_backend: Callable[..., GraphiteBackend], carbon: Carbon
) -> None:
    backend = make_backend()
    load = [0.1, 0.2, 0.3, 0.4]
    backend.emit(
        rollup(
            counter("orders", 5),
            gauge("depth", 1),
            values_series("load", load[:3]),
            health("events", 10),
        )
    )
    assert len(carbon.read_lines(2 + 1 + 10 + 2)) == 15
    backend.stop_event.set()  # stopping: this flush covers the 3 s since the last one
    backend.emit(
        Rollup(
            STAMP + 3.5,
            3.0,
            (
                counter("orders", 2),
                gauge("depth", 4),
                values_series("load", load[3:]),
                health("events", 3),
            ),
        )
    )
    resent = [line.split(" ") for line in carbon.read_lines(15)]
    assert {stamp for _, _, stamp in resent} == {str(STAMP)}  # overwrites, with a superset
    lines = {path: value for path, value, _ in resent}
    assert lines["zibrato.backend.events.backend.graphite.count"] == "13"
    assert lines["orders.count"] == "7"
    assert float(lines["orders.rate"]) == pytest.approx(7 / 13)
    assert lines["depth"] == "4"
    assert lines["load.count"] == "4"
    assert float(lines["load.sum"]) == pytest.approx(1.0)
    assert float(lines["load.max"]) == 0.4


def test_a_flush_in_the_same_second_is_merged_into_the_last_point(
    make_backend: Callable[..., GraphiteBackend], carbon: Carbon
) -> None:
    def hits(total: float, interval: float, name: str = "hits") -> Series:
        return Series(name, "counter", None, {}, {"sum": total, "rate": total / interval})

    backend = make_backend()
    backend.emit(Rollup(STAMP + 0.1, 1.0, (hits(1, 1.0),)))
    backend.emit(Rollup(STAMP + 0.9, 0.8, (hits(2, 0.8), hits(4, 0.8, "misses"))))
    backend.emit(Rollup(STAMP + 1.1, 0.2, (hits(8, 0.2),)))
    assert carbon.read_lines(2 + 4 + 2) == [
        f"hits.count 1 {STAMP}",
        f"hits.rate 1 {STAMP}",
        f"hits.count 3 {STAMP}",
        f"hits.rate 1.66666666666667 {STAMP}",
        f"misses.count 4 {STAMP}",
        f"misses.rate 2.22222222222222 {STAMP}",
        f"hits.count 8 {STAMP + 1}",
        f"hits.rate 40 {STAMP + 1}",
    ]


def test_stopping_retries_at_once_inside_the_backoff(carbon: Carbon) -> None:
    clock = FakeClock()  # never advanced: every attempt is inside the backoff window
    port = carbon.port
    carbon.close()
    backend = GraphiteBackend(connect="tcp://127.0.0.1:1", address=f"127.0.0.1:{port}", clock=clock)
    restarted: Carbon | None = None
    try:
        backend.emit(rollup(gauge("a", 1)))
        backend.emit(rollup(gauge("b", 2), at=STAMP + 1))
        assert (backend.target_errors, backend.pending_lines) == (1, 2)
        restarted = Carbon(port=port)
        backend.stop_event.set()
        backend.emit(rollup(gauge("c", 3), at=STAMP + 2))
        assert restarted.read_lines(3) == [f"a 1 {STAMP}", f"b 2 {STAMP + 1}", f"c 3 {STAMP + 1}"]
        assert backend.pending_lines == 0
    finally:
        backend.close_target()
        if restarted is not None:
            restarted.close()
    assert backend.dropped_lines == 0


# -- configuration -----------------------------------------------------------------------
def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="timeout"):
        GraphiteBackend(timeout=0)
    with pytest.raises(ValueError, match="buffer_lines"):
        GraphiteBackend(buffer_lines=-1)
    with pytest.raises(ValueError, match="invalid address"):
        GraphiteBackend(address="carbon:plaintext")


def test_options_match_the_constructor() -> None:
    cls = load("graphite")
    assert cls is GraphiteBackend
    parameters = inspect.signature(cls.__init__).parameters
    for option in cls.options:
        assert parameters[option.dest].default == option.default
    assert repr(cls()).startswith("<GraphiteBackend connect=")


# -- end to end --------------------------------------------------------------------------
def test_end_to_end_through_the_broker(carbon: Carbon) -> None:
    broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    frontend, backend_address = broker.start()
    backend = GraphiteBackend(
        connect=backend_address, flush_interval=0.2, address=carbon.address, tags=True
    )
    backend.start()
    z = Zibrato(frontend, source="web-1")
    try:
        z.incr("orders", 3, tags={"method": "GET"})
        z.timing("load", 0.25)
        z.flush()
        wanted = {"orders.count;method=GET;source=web-1 3", "load.max;source=web-1 0.25"}
        seen: set[str] = set()
        deadline = time.monotonic() + 10
        while not wanted <= seen and time.monotonic() < deadline:
            line = carbon.read_lines(1, timeout=max(0.01, deadline - time.monotonic()))[0]
            path, value, stamp = line.split(" ")
            assert abs(int(stamp) - time.time()) < 60
            seen.add(f"{path} {value}")
        assert wanted <= seen
    finally:
        z.close()
        backend.stop()
        broker.stop()


# -- fuzz: whatever a caller names, every line is one well-formed plaintext line ----------
_TAG = r";[A-Za-z0-9_./\-]+=[A-Za-z0-9_./:\-]+"
FOLDED_LINE = re.compile(r"[A-Za-z0-9_.\-]+ -?\d+(?:\.\d+)? \d+\n")
TAGGED_LINE = re.compile(rf"[A-Za-z0-9_.\-]+(?:{_TAG})* -?\d+(?:\.\d+)? \d+\n")
texts = st.text(min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    name=texts,
    tags=st.dictionaries(texts, st.text(max_size=10), max_size=3),
    source=st.none() | texts,
    kind=st.sampled_from(["counter", "gauge", "timer", "distribution"]),
    values=st.lists(
        st.floats(min_value=-1e100, max_value=1e100, allow_nan=False), min_size=1, max_size=5
    ),
    tagged=st.booleans(),
)
def test_any_name_and_tags_make_well_formed_lines(
    name: str,
    tags: dict[str, str],
    source: str | None,
    kind: str,
    values: list[float],
    tagged: bool,
) -> None:
    if kind == "counter":
        stats = {"sum": values[0], "rate": values[0] / 10}
    elif kind == "gauge":
        stats = {"value": values[0]}
    else:
        stats = distribution_stats(sorted(values))
    series = Series(name, kind, source, tags, stats, sorted(values))
    backend = GraphiteBackend(connect="tcp://127.0.0.1:1", tags=tagged, prefix="app")
    lines = backend.lines(rollup(series))
    assert len(lines) == {"counter": 2, "gauge": 1}.get(kind, 10)
    grammar = TAGGED_LINE if tagged else FOLDED_LINE
    for line in lines:
        assert grammar.fullmatch(line.decode()), line
