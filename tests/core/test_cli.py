"""The ``zibrato`` command: broker and tail as real subprocesses."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zibrato import __version__, backends, cli

TAIL_PROBE = "tail.probe"
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]


def start_tail(run_cli, broker, client, *args, probe_level="crit"):
    """Start ``zibrato tail`` and return it once a probe event shows up in its output."""
    tail = run_cli("tail", "--connect", broker.backend, *args)
    deadline = time.monotonic() + 10
    while not tail.lines_matching(lambda line: TAIL_PROBE in line):
        assert tail.popen.poll() is None, f"tail exited early: {tail!r}"
        assert time.monotonic() < deadline, f"tail never showed a probe: {tail!r}"
        client.incr(TAIL_PROBE, level=probe_level)
        client.flush(timeout=0.1)
        time.sleep(0.02)
    return tail


def wait_for_marker(tail, client, marker):
    """Send ``marker`` (crit) after everything else and wait until tail printed it."""
    client.incr(marker, level="crit")
    client.flush()
    tail.wait_for_line(lambda line: marker in line, timeout=10)


def test_help_works():
    result = subprocess.run(
        [sys.executable, "-m", "zibrato", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "broker" in result.stdout
    assert "tail" in result.stdout
    version = subprocess.run(
        [sys.executable, "-m", "zibrato", "--version"], capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0
    assert __version__ in version.stdout


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("zibrato")
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    result = subprocess.run(
        [str(script), "broker", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "--frontend" in result.stdout
    assert "--backend" in result.stdout


def test_tail_rejects_an_unknown_level():
    result = subprocess.run(
        [sys.executable, "-m", "zibrato", "tail", "--level", "loud"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "loud" in result.stderr


@pytest.mark.parametrize("side", ["frontend", "backend"])
def test_broker_on_an_address_in_use_exits_with_a_message(broker, run_cli, side):
    taken = getattr(broker, side)
    free = "tcp://127.0.0.1:0"
    args = ["--frontend", taken, "--backend-address", free]
    if side == "backend":
        args = ["--frontend", free, "--backend-address", taken]
    second = run_cli("broker", *args)
    code = second.wait(10)
    assert code is not None, "the second broker kept running on an address in use"
    second.stop()  # reap and collect its output
    assert code != 0
    assert "already in use" in "\n".join(second.stderr), second
    assert taken in "\n".join(second.stderr)


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_broker_stops_cleanly_on_signal(broker_process, signum):
    process, _ = broker_process
    started = time.monotonic()
    process.signal(signum)
    code = process.wait(2.0)
    assert code == 0, f"exit code {code} after {time.monotonic() - started:.2f} s: {process!r}"
    process.stop()
    assert any("stopped" in line for line in process.stdout), process


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: s.name)
def test_tail_stops_cleanly_on_signal(broker, run_cli, new_client, signum):
    client = new_client(publish=broker.frontend)
    tail = start_tail(run_cli, broker, client)
    tail.signal(signum)
    code = tail.wait(2.0)
    assert code == 0, f"exit code {code}: {tail!r}"


def test_tail_json_prints_one_object_per_event(broker, run_cli, new_client):
    client = new_client(publish=broker.frontend, source="web-1", tags={"app": "shop"})
    tail = start_tail(run_cli, broker, client, "--json")

    client.incr("orders.placed", 2, tags={"route": "/checkout"})
    client.timing("orders.upstream", 0.0123, level="warning")
    with client.timer("orders.load", source="batch-7"):
        time.sleep(0.01)
    client.gauge("queue.depth", 42, level="debug")
    client.gauge("queue.depth", -3, delta=True, level="debug")
    client.observe("orders.items", 7, level="error")
    wait_for_marker(tail, client, "json.done")

    records = []
    for line in tail.stdout[:]:
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict)
        assert {"type", "name", "value", "level", "source", "tags", "timestamp"} <= set(record)
        if record["name"] not in (TAIL_PROBE, "json.done"):
            records.append(record)
    by_name: dict[str, list[dict]] = {}
    for record in records:
        by_name.setdefault(record["name"], []).append(record)
    expected = {"orders.placed", "orders.upstream", "orders.load", "queue.depth", "orders.items"}
    assert set(by_name) == expected, (client.stats(), tail.stdout)

    (placed,) = by_name["orders.placed"]
    assert (placed["type"], placed["value"], placed["level"]) == ("counter", 2, "info")
    assert placed["source"] == "web-1"
    assert placed["tags"] == {"app": "shop", "route": "/checkout"}
    assert abs(placed["timestamp"] - time.time()) < 60
    (upstream,) = by_name["orders.upstream"]
    assert (upstream["type"], upstream["value"], upstream["level"]) == ("timer", 0.0123, "warning")
    (load,) = by_name["orders.load"]
    assert load["type"] == "timer"
    assert 0.01 <= load["value"] < 5  # seconds
    assert load["source"] == "batch-7"
    assert [(g["type"], g["value"]) for g in by_name["queue.depth"]] == [
        ("gauge", 42),
        ("gauge", -3),
    ]
    (items,) = by_name["orders.items"]
    assert (items["type"], items["value"], items["level"]) == ("distribution", 7, "error")


def test_tail_text_lines_are_readable(broker, run_cli, new_client):
    client = new_client(publish=broker.frontend, source="web-1", tags={"app": "shop"})
    tail = start_tail(run_cli, broker, client)
    client.timing("text.timer", 0.25, level="error", tags={"route": "/x"})
    client.incr("text.counter", 3)
    wait_for_marker(tail, client, "text.done")
    (timer_line,) = tail.lines_matching(lambda line: "text.timer" in line)
    assert "250.000ms" in timer_line
    assert "error" in timer_line
    assert "source=web-1" in timer_line
    assert "app=shop" in timer_line
    assert "route=/x" in timer_line
    (counter_line,) = tail.lines_matching(lambda line: "text.counter" in line)
    # time, level, type, name, value, then source and tags
    assert counter_line.split()[1:5] == ["info", "counter", "text.counter", "3"]


def test_tail_level_error_shows_only_error_and_crit(broker, run_cli, new_client, subscribe):
    # Another subscriber takes every level, so lower levels do cross the broker: tail itself
    # must leave them out.
    everything = subscribe("debug")
    client = new_client(publish=broker.frontend)
    tail = start_tail(run_cli, broker, client, "--level", "error", "--json")
    for level in ("debug", "info", "warning", "error", "crit", "warn", "critical"):
        client.incr(f"level.{level}", level=level)
    wait_for_marker(tail, client, "level.done")
    everything.wait_names("level.debug", "level.info", "level.warning", "level.done")

    shown = [json.loads(line) for line in tail.stdout[:]]
    assert {record["level"] for record in shown} <= {"error", "crit"}
    names = {record["name"] for record in shown} - {TAIL_PROBE, "level.done"}
    assert names == {"level.error", "level.crit", "level.critical"}


def test_tail_says_what_it_waits_on(run_cli):
    tail = run_cli("tail", "--connect", "tcp://127.0.0.1:1", "--level", "warn")
    deadline = time.monotonic() + 10
    while not tail.stderr:
        assert time.monotonic() < deadline, tail
        time.sleep(0.02)
    tail.stop()
    assert tail.stderr[0].startswith(
        "zibrato tail: showing events of level warning and above from the broker at "
        "tcp://127.0.0.1:1 (start one with `zibrato run` if none is running)"
    ), tail


def test_broker_backend_is_the_address_for_one_more_release_with_one_line_of_notice(run_cli):
    old = run_cli("broker", "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0")
    line = old.wait_for_line(lambda text: "subscribers connect to" in text, 30)
    assert "tcp://127.0.0.1:0" not in line  # the address given, bound on a picked port
    old.signal(signal.SIGINT)
    assert old.wait(5) == 0
    old.stop()
    assert old.stderr == [
        "zibrato broker: --backend ADDR is deprecated, use --backend-address ADDR (--backend "
        "names a backend KIND in every other command)"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "--backend", "tcp://127.0.0.1:35037"],
            "zibrato run: 'tcp://127.0.0.1:35037' is an address, not a backend kind: use one "
            "of console",
        ),
        (["broker", "--backend", "console"], "zibrato broker: argument --backend: 'console' is"),
        (["broker", "--frontend", "tcp://127.0.0.1:²"], "'²' is not a port number (1-65535)"),
        (
            ["run", "--backend-address", "tcp://127.0.0.1:\u0665\u0665\u0665\u0660"],
            "is not a port number",
        ),
    ],
)
def test_backend_is_a_kind_and_backend_address_an_address(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line, line


# -- every option and backend option, fuzzed: one line and exit status 2, never a traceback --
ODD_VALUES = st.one_of(
    st.sampled_from(["", "²", "٣", "nan", "inf", "-inf", "1e308", "-1", "0", "x" * 5000, "\n"]),
    st.text(max_size=20),
    st.floats(allow_nan=True).map(repr),
    st.integers().map(str),
)
OPTIONS = sorted(
    {f"--{option.name}" for kind in backends.BUILTIN for option in backends.load(kind).options}
    - {"--health", "--tags"}  # flags: they take no value
)
COMMON = ["--level", "--flush", "--percentiles", "--connect", "--curve"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(backends.BUILTIN)), option=st.sampled_from(OPTIONS + COMMON))
@example(kind="dashboard", option="--history-days").via("the issue: FLUSH 1e308 and the like")
def test_any_backend_option_value_is_one_line_and_exit_2_or_a_backend(kind, option):
    for value in ("1e308", "nan", "²", "x" * 5000, "-1"):
        _one_line_or_built(["backend", kind, option, value])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(backends.BUILTIN)),
    option=st.sampled_from(OPTIONS + COMMON),
    value=ODD_VALUES,
)
def test_any_option_value_is_one_line_and_exit_2_or_a_backend(kind, option, value):
    _one_line_or_built(["backend", kind, option, value])


def _one_line_or_built(argv):
    """Parse and build as ``zibrato ARGV`` would (nothing starts): a backend, or one line."""
    stderr = io.StringIO()
    with (
        tempfile.TemporaryDirectory() as scratch,  # where a jsonl or dashboard file may go
        contextlib.chdir(scratch),
        contextlib.redirect_stderr(stderr),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            parser, cls = cli.backend_parser(argv[1:])
            parsed = parser.parse_args(argv[1:])
            spec = cli.backend_spec(parsed.kind, cls, parsed, "")
            cli.build_backends(parser, [spec], parsed, parsed.connect)
        except SystemExit as exc:
            assert exc.code == 2, (argv, stderr.getvalue())
            (line,) = stderr.getvalue().splitlines()
            assert line.startswith(f"zibrato backend {argv[1]}: ") and len(line) < 600, line
            return
    assert stderr.getvalue() == ""
