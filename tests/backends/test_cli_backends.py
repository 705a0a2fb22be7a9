"""``zibrato backend KIND`` and ``zibrato run``, as subprocesses on random loopback ports.

Every subprocess is terminated and reaped by the ``run_cli`` fixture (``tests/conftest.py``),
which the ``cli`` fixture here wraps; every wait has a deadline.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from backend_support import read_records, total, wait_records, wait_subscribed

from zibrato import Zibrato

if TYPE_CHECKING:
    from conftest import Addresses, CliProcess  # tests/conftest.py

HERE = Path(__file__).resolve().parent
READY = 15.0  # a subprocess importing zibrato and binding its sockets
RUN_READY = r"^zibrato run: publishers connect to (tcp://\S+);"


@pytest.fixture
def cli(run_cli: Callable[..., CliProcess], tmp_path: Path) -> Callable[..., CliProcess]:
    """``run_cli`` in ``tmp_path``, unbuffered, with ``custom_backend`` importable."""
    pythonpath = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    return functools.partial(run_cli, cwd=tmp_path, env=env)


def publish(frontend: str, *names_and_values: tuple[str, float], timers: int = 0) -> None:
    z = Zibrato(frontend, source="cli-test")
    try:
        for name, value in names_and_values:
            z.incr(name, value)
        for n in range(timers):
            z.timing("cli.timer", n / 100)
        z.flush()
    finally:
        z.close()


def wait_total(path: Path, name: str, expected: float, key: str = "sum") -> None:
    wait_records(path, lambda records: total(records, name, key) >= expected)
    assert total(read_records(path), name, key) == expected


def start_run(cli: Callable[..., CliProcess], *args: str) -> tuple[CliProcess, str]:
    any_port = "tcp://127.0.0.1:0"
    process = cli("run", "--frontend", any_port, "--backend-address", any_port, *args)
    frontend = process.wait_line(RUN_READY, READY)[1]
    wait_subscribed(frontend)
    return process, frontend


# -- zibrato backend KIND ----------------------------------------------------------------------
def test_backend_jsonl_with_a_separate_broker(
    cli: Callable[..., CliProcess], broker: Addresses, tmp_path: Path
) -> None:
    path = tmp_path / "out.jsonl"
    backend = cli(
        "backend", "jsonl", "--connect", broker.backend, "--flush", "0.3", "--path", str(path)
    )
    backend.wait_line(r"^zibrato backend jsonl: jsonl backend: appending to .*out\.jsonl", READY)
    wait_subscribed(broker.frontend)
    publish(broker.frontend, ("cli.orders", 4), ("cli.orders", 5), timers=3)
    wait_total(path, "cli.orders", 9)
    records = read_records(path)
    orders = [r for r in records if r["name"] == "cli.orders"]
    assert all(r["source"] == "cli-test" and r["type"] == "counter" for r in orders)
    wait_total(path, "cli.timer", 3, key="count")
    backend.signal(signal.SIGTERM)
    assert backend.finish(3.0) == 0


# -- zibrato run -------------------------------------------------------------------------------
def test_run_jsonl_end_to_end(cli: Callable[..., CliProcess], tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    process, frontend = start_run(
        cli, "--backend", "jsonl", "--jsonl-path", str(path), "--flush", "0.3"
    )
    publish(frontend, ("run.hits", 2), ("run.hits", 3))
    wait_total(path, "run.hits", 5)
    health = [r for r in read_records(path) if r["name"] == "zibrato.backend.events"]
    assert health and health[0]["tags"] == {"backend": "jsonl"}
    process.wait_line(r"^zibrato run: jsonl backend: appending to .*run\.jsonl")
    process.wait_line(r"^zibrato run: running; Ctrl-C to stop$")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stops_on_a_signal_and_flushes_what_it_aggregated(
    cli: Callable[..., CliProcess], tmp_path: Path, signum: signal.Signals
) -> None:
    path = tmp_path / "final.jsonl"
    # A 30 s interval: only the final flush at shutdown can write these events.
    process, frontend = start_run(
        cli, "--backend", "jsonl", "--jsonl-path", str(path), "--flush", "30"
    )
    publish(frontend, ("final.hits", 7), ("final.hits", 1), timers=4)
    signalled = time.monotonic()
    process.signal(signum)
    code = process.finish(timeout=5.0)
    took = time.monotonic() - signalled
    assert code == 0, process
    assert took < 2.0, f"took {took:.2f} s to stop"
    assert any("zibrato run: stopped" in line for line in process.stdout), process
    records = read_records(path)
    assert total(records, "final.hits") == 8, records
    assert total(records, "cli.timer", "count") == 4


def test_run_without_backend_prints_a_console_table(cli: Callable[..., CliProcess]) -> None:
    process, frontend = start_run(cli, "--flush", "0.3")
    process.wait_line(r"^zibrato run: console backend: printing a table to standard output")
    publish(frontend, ("console.hits", 6))
    row = process.wait_line(r"^console\.hits\s")
    assert row.string.split()[-2] == "6"  # the sum, before the rate
    process.wait_line(r"^-- zibrato \d{4}-\d\d-\d\d .* series --$")
    process.wait_line(r"^counter\s+sum\s+rate/s$")
    assert not [line for line in process.stdout if "zibrato.backend." in line]


def test_run_a_user_backend_by_dotted_path(cli: Callable[..., CliProcess]) -> None:
    process, frontend = start_run(
        cli, "--backend", "custom_backend:MyBackend", "--marker", "HELLO", "--flush", "0.3"
    )
    process.wait_line(r"^zibrato run: custom backend: ")
    publish(frontend, ("custom.hits", 2), ("custom.hits", 3))
    process.wait_line(r"^HELLO counter custom\.hits 5$")


def test_backend_a_user_backend_by_dotted_path(
    cli: Callable[..., CliProcess], broker: Addresses
) -> None:
    backend = cli(
        "backend", "custom_backend:MyBackend", "--connect", broker.backend, "--flush", "0.3"
    )
    backend.wait_line(
        r"^zibrato backend custom_backend:MyBackend: custom backend: .*receiving", READY
    )
    wait_subscribed(broker.frontend)
    publish(broker.frontend, ("dotted.hits", 4))
    backend.wait_line(r"^CUSTOM counter dotted\.hits 4$")


# -- help and errors ---------------------------------------------------------------------------
def test_backend_kind_help_shows_its_options(cli: Callable[..., CliProcess]) -> None:
    process = cli("backend", "statsd", "--help")
    assert process.finish() == 0, process
    text = "\n".join(process.stdout)
    for option in ("--address", "--prefix", "--tag-style", "--max-packet", "--connect", "--flush"):
        assert option in text, option
    assert "statsd backend options" in text


def test_run_help_shows_every_kinds_prefixed_options(cli: Callable[..., CliProcess]) -> None:
    process = cli("run", "--help")
    assert process.finish() == 0, process
    text = "\n".join(process.stdout)
    for option in (
        "--backend",
        "--frontend",
        "--backend-address",
        "--flush",
        "--console-health",
        "--jsonl-path",
        "--statsd-address",
        "--graphite-",
        "--prometheus-listen",
        "--librato-url",
    ):
        assert option in text, option


def test_run_help_shows_a_dotted_path_backends_options(cli: Callable[..., CliProcess]) -> None:
    process = cli("run", "--backend", "custom_backend:MyBackend", "--help")
    assert process.finish() == 0, process
    assert "--marker" in "\n".join(process.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("backend", "nosuch"), "unknown backend 'nosuch'"),
        (("run", "--backend", "nosuch"), "unknown backend 'nosuch'"),
        (("backend", "no_such_module_zz:Thing"), "cannot load backend"),
        (("run", "--backend", "custom_backend:Missing"), "cannot load backend"),
        (("run", "--backend", "custom_backend:NotABackend"), "not a zibrato.backends.Backend"),
    ],
    ids=["backend-unknown", "run-unknown", "no-module", "no-class", "not-a-backend"],
)
def test_unknown_backend_kinds_fail_clearly(
    cli: Callable[..., CliProcess], args: tuple[str, ...], message: str
) -> None:
    process = cli(*args)
    code = process.finish()
    assert code != 0, process
    assert message in "\n".join(process.stderr), process
    assert not [line for line in process.stderr if "Traceback" in line], process


@pytest.mark.parametrize("busy", ["frontend", "backend-address"])
def test_run_on_an_address_in_use_exits_2(cli: Callable[..., CliProcess], busy: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"tcp://127.0.0.1:{holder.getsockname()[1]}"
        addresses = {"frontend": "tcp://127.0.0.1:0", "backend-address": "tcp://127.0.0.1:0"}
        addresses[busy] = taken
        process = cli(
            "run",
            "--frontend",
            addresses["frontend"],
            "--backend-address",
            addresses["backend-address"],
        )
        code = process.finish()
    assert code == 2, process
    stderr = "\n".join(process.stderr)
    assert "already in use" in stderr, process
    assert taken in stderr


# -- one line per user mistake (never a traceback), exit status 2 ------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tail", "--connect", "nonsense"), "'nonsense' is not a ZeroMQ address: use tcp://"),
        (("tail", "--connect", "tcp://nonsense"), "'tcp://nonsense' has no port"),
        (("tail", "--connect", "tcp://127.0.0.1"), "'tcp://127.0.0.1' has no port"),
        (("broker", "--frontend", "nonsense"), "'nonsense' is not a ZeroMQ address"),
        (("run", "--frontend", "bogus://x"), "unknown transport 'bogus'"),
        (("run", "--flush", "0"), "the flush interval must be more than 0 seconds"),
        (("run", "--flush", "-1"), "the flush interval must be more than 0 seconds"),
        (("backend", "jsonl", "--flush", "soon"), "must be a number of seconds"),
        (("run", "--percentiles", "0,200"), "percentiles must be in (0, 100]"),
        (("backend", "prometheus", "--listen", "nonsense"), "listen must be HOST:PORT"),
        (("run", "--backend", "prometheus", "--prometheus-listen", "x"), "listen must be"),
        (("backend", "librato"), "needs an account email and an API token"),
        (("run", "--backend", "librato", "--librato-email", "a@b.c"), "ZIBRATO_LIBRATO_TOKEN"),
        (("backend", "statsd", "--max-packet", "big"), "must be a whole number, not 'big'"),
        (("backend", "statsd", "--tag-style", "odd"), "must be one of name, dogstatsd, not 'odd'"),
        (("tail", "--level", "loud"), "unknown level 'loud'"),
        (("broker", "--frontend", "tcp://192.0.2.1:5550"), "refusing to bind tcp://192.0.2.1:5550"),
        (("broker", "--frontend", "ipc:///no-dir/z"), "cannot bind ipc:///no-dir/z"),
    ],
)
def test_a_user_mistake_is_one_line_and_exit_2(
    cli: Callable[..., CliProcess], args: tuple[str, ...], message: str
) -> None:
    process = cli(*args, env={"ZIBRATO_LIBRATO_TOKEN": ""})
    assert process.finish() == 2, process
    assert process.stderr and len(process.stderr) == 1, process
    (line,) = process.stderr
    assert line.startswith(f"zibrato {args[0]}"), process
    assert message in line, process


@pytest.mark.parametrize("how", ["run", "backend"])
def test_metrics_port_in_use_is_one_line_and_exit_2(
    cli: Callable[..., CliProcess], broker: Addresses, how: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        if how == "run":
            any_port = "tcp://127.0.0.1:0"
            process = cli(
                "run", "--frontend", any_port, "--backend-address", any_port,
                "--backend", "prometheus", "--prometheus-listen", listen,
            )  # fmt: skip
        else:
            process = cli("backend", "prometheus", "--connect", broker.backend, "--listen", listen)
        assert process.finish() == 2, process
    (line,) = process.stderr
    assert f"http://{listen}/metrics" in line
    assert "already in use" in line


def test_a_dotted_path_backend_is_found_in_the_current_directory(
    run_cli: Callable[..., CliProcess], tmp_path: Path
) -> None:
    # Through the console script, as a user runs it: the current directory is not on
    # sys.path unless zibrato puts it there.
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "alerts.py").write_text((HERE / "custom_backend.py").read_text())
    script = Path(sys.executable).with_name("zibrato")
    assert script.exists(), "the console script is installed beside the interpreter"
    any_port = "tcp://127.0.0.1:0"
    process = subprocess.Popen(
        [str(script), "run", "--frontend", any_port, "--backend-address", any_port,
         "--backend", "mypkg.alerts:MyBackend", "--marker", "FROMCWD", "--flush", "0.3"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY
        assert process.stdout is not None
        line = process.stdout.readline()
        while "FROMCWD flushed" not in line:
            assert line or process.poll() is None, process.stderr and process.stderr.read()
            assert time.monotonic() < deadline, "the backend never flushed"
            line = process.stdout.readline()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(5) == 0
        finally:
            process.kill()
            process.communicate()


def test_startup_lines_say_where_each_part_listens(
    cli: Callable[..., CliProcess], tmp_path: Path
) -> None:
    path = tmp_path / "where.jsonl"
    process, frontend = start_run(
        cli, "--backend", "prometheus", "--prometheus-listen", "127.0.0.1:0",
        "--backend", "jsonl", "--jsonl-path", str(path), "--flush", "0.5",
    )  # fmt: skip
    url = process.wait_line(
        r"^zibrato run: prometheus backend: serving (http://127\.0\.0\.1:\d+/metrics) "
    )[1]
    process.wait_line(rf"^zibrato run: jsonl backend: appending to {re.escape(str(path))} ")
    process.wait_line(r"^zibrato run: running; Ctrl-C to stop$")
    publish(frontend, ("where.hits", 1))
    deadline = time.monotonic() + 10
    while "where_hits_total" not in (body := requests.get(url, timeout=5).text):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
