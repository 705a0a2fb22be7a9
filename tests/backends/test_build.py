"""Backends from plain data (``zibrato.backends.build``): what settings dicts and the CLI feed."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from zibrato import backends
from zibrato.backends.console import ConsoleBackend
from zibrato.backends.jsonl import JsonLinesBackend
from zibrato.backends.prometheus import PrometheusBackend
from zibrato.backends.statsd import StatsdBackend
from zibrato.errors import ConfigError
from zibrato.runner import Runner, serve


def test_build_makes_each_kind_with_its_options_and_the_defaults(tmp_path: Path) -> None:
    built = backends.build(
        [
            {"kind": "prometheus", "listen": "127.0.0.1:0", "buckets": "0.1,1"},
            {"KIND": "jsonl", "PATH": str(tmp_path / "m.jsonl"), "FLUSH": "2.5"},
            {"kind": "statsd", "max-packet": "512", "tag_style": "dogstatsd", "level": "warn"},
            {"kind": "console", "health": True, "percentiles": [50, 99.9]},
        ],
        connect="tcp://127.0.0.1:6001",
        flush=7,
    )
    prometheus, jsonl, statsd, console = built
    assert isinstance(prometheus, PrometheusBackend) and prometheus.buckets == (0.1, 1.0)
    assert isinstance(jsonl, JsonLinesBackend) and jsonl.path == str(tmp_path / "m.jsonl")
    assert jsonl.flush_interval == 2.5 and prometheus.flush_interval == 7
    assert isinstance(statsd, StatsdBackend)
    assert (statsd.max_packet, statsd.tag_style, statsd.level) == (512, "dogstatsd", "warning")
    assert isinstance(console, ConsoleBackend) and console.health
    assert console.aggregator.percentiles == (50, 99.9)
    assert {b.connect for b in built} == {"tcp://127.0.0.1:6001"}


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([{"kind": "nosuch"}], "unknown backend 'nosuch': use one of console, jsonl"),
        ([{"path": "x"}], "backend #1 names no kind"),
        ([{"kind": "console"}, "jsonl"], "backend #2 must be a mapping"),
        ({"kind": "console"}, "backends must be a list of mappings"),
        ([{"kind": "prometheus", "port": 9102}], "unknown option 'port'; it accepts listen"),
        ([{"kind": "prometheus", "listen": "nonsense"}], "backend: listen must be HOST:PORT"),
        ([{"kind": "statsd", "max_packet": "big"}], "option 'max-packet' must be a whole number"),
        ([{"kind": "statsd", "tag_style": "odd"}], "'tag-style' must be one of name"),
        ([{"kind": "console", "health": "yes"}], "option 'health' must be true or false"),
        ([{"kind": "console", "flush": 0}], "the flush interval must be more than 0 seconds"),
        ([{"kind": "console", "level": "loud"}], "console backend: unknown level 'loud'"),
        ([{"kind": "console", "percentiles": "0"}], "percentiles must be in (0, 100]"),
        ([{"kind": "librato", "email": "a@b.c", "token": ""}], "needs an account email"),
        ([{1: "console"}], "option names are strings"),
    ],
)  # fmt: skip
def test_build_explains_every_mistake_in_one_line(specs: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        backends.build(specs)  # type: ignore[arg-type]
    text = str(raised.value)
    assert message in text
    assert "\n" not in text


def test_serve_says_where_parts_listen_and_stops_on_the_event(tmp_path: Path) -> None:
    (jsonl,) = backends.build([{"kind": "jsonl", "path": str(tmp_path / "s.jsonl")}], flush=60)
    runner = Runner([jsonl], frontend="tcp://127.0.0.1:0", backend_address="tcp://127.0.0.1:0")
    stop, out, err = threading.Event(), io.StringIO(), io.StringIO()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(serve(runner, name="t", stop=stop, out=out, err=err))
    )
    thread.start()
    try:
        deadline = threading.Event()
        for _ in range(100):
            if "Ctrl-C to stop" in out.getvalue():
                break
            deadline.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert result == [0], err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("t: publishers connect to tcp://127.0.0.1:")
    assert ":0;" not in lines[0]  # the ports actually bound
    assert lines[1].startswith(f"t: jsonl backend: appending to {tmp_path / 's.jsonl'}")
    assert lines[2:] == ["t: running; Ctrl-C to stop", "t: stopped"]


def test_serve_turns_an_address_in_use_into_one_line_and_leaves_nothing_running() -> None:
    first = Runner(frontend="tcp://127.0.0.1:0", backend_address="tcp://127.0.0.1:0")
    frontend, _ = first.start()
    try:
        second = Runner(frontend=frontend, backend_address="tcp://127.0.0.1:0")
        err = io.StringIO()
        assert serve(second, name="t", stop=threading.Event(), err=err) == 2
        assert (
            err.getvalue()
            == f"t: {frontend} is already in use (is another zibrato broker running?)\n"
        )
    finally:
        first.stop()


class _DyingJsonLines(JsonLinesBackend):
    """A backend with a bug: its flushing thread ends by an exception once it starts."""

    def _flush_loop(self) -> None:
        raise RuntimeError("a bug in a custom backend")


def test_serve_exits_1_with_one_line_when_a_backend_thread_dies(tmp_path: Path) -> None:
    healthy = JsonLinesBackend(path=str(tmp_path / "ok.jsonl"), flush_interval=60)
    dying = _DyingJsonLines(path=str(tmp_path / "bad.jsonl"), flush_interval=60)
    runner = Runner(
        [healthy, dying], frontend="tcp://127.0.0.1:0", backend_address="tcp://127.0.0.1:0"
    )
    stop, out, err = threading.Event(), io.StringIO(), io.StringIO()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(serve(runner, name="t", stop=stop, out=out, err=err))
    )
    thread.start()
    thread.join(10)  # no stop needed: serve() ends by itself
    stop.set()
    assert result == [1]
    assert err.getvalue() == (
        "t: the jsonl backend stopped: zibrato-jsonl-flush died: "
        "RuntimeError: a bug in a custom backend; stopping the rest\n"
    )
    assert out.getvalue().splitlines()[-1] == "t: stopped"
    assert (tmp_path / "ok.jsonl").exists()  # the healthy backend's final flush was written
