"""``zibrato backend KIND`` and ``zibrato run``, as subprocesses on random loopback ports.

Every subprocess is terminated and reaped by the ``cli`` fixture; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import zmq

from zibrato import Zibrato

HERE = Path(__file__).resolve().parent
READY = 15.0  # a subprocess importing zibrato and binding its sockets
WAIT = 10.0
BROKER_LINE = re.compile(r"publishers connect to (tcp://\S+); subscribers connect to (tcp://\S+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


class Cli:
    """``python -m zibrato ARGS`` with its output collected line by line."""

    def __init__(self, args: tuple[str, ...], cwd: Path) -> None:
        self.args = args
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "zibrato", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.readers = [
            threading.Thread(target=_collect, args=(self.popen.stdout, self.stdout), daemon=True),
            threading.Thread(target=_collect, args=(self.popen.stderr, self.stderr), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def __repr__(self) -> str:
        return (
            f"<zibrato {' '.join(self.args)} rc={self.popen.poll()}\n"
            f"stdout={self.stdout[-30:]}\nstderr={self.stderr[-30:]}>"
        )

    def wait_line(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            for line in list(self.stdout):
                match = regex.search(line)
                if match:
                    return match
            if self.popen.poll() is not None and not self.readers[0].is_alive():
                raise AssertionError(f"exited without printing {pattern!r}: {self!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no line {pattern!r} within {timeout} s: {self!r}")
            time.sleep(0.02)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the process to exit by itself, then for its output."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self!r}") from None
        for reader in self.readers:
            reader.join(WAIT)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for reader in self.readers:
            reader.join(5)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def _collect(stream: IO[str], lines: list[str]) -> None:
    try:
        for line in stream:
            lines.append(line.rstrip("\n"))
    except ValueError:  # closed during teardown
        pass


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., Cli]]:
    started: list[Cli] = []

    def run(*args: str) -> Cli:
        process = Cli(args, tmp_path)
        started.append(process)
        return process

    yield run
    for process in reversed(started):
        process.stop()


def wait_subscribed(frontend: str, topic: bytes = b"info", timeout: float = WAIT) -> None:
    """Wait until the broker at ``frontend`` forwards a subscription to ``topic``."""
    probe = zmq.Context.instance().socket(zmq.XPUB)
    probe.setsockopt(zmq.LINGER, 0)
    try:
        probe.connect(frontend)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no subscription to {topic!r} reached {frontend}"
            if probe.poll(int(remaining * 1000) + 1) and probe.recv() == b"\x01" + topic:
                return
    finally:
        probe.close(linger=0)


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


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def total(records: list[dict[str, Any]], name: str, key: str = "sum") -> float:
    return sum(r[key] for r in records if r["name"] == name)


def wait_total(path: Path, name: str, expected: float, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while total(read_records(path), name) < expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never reached {expected}: {read_records(path)[-10:]}")
        time.sleep(0.05)
    assert total(read_records(path), name) == expected


def start_run(cli: Callable[..., Cli], *args: str) -> tuple[Cli, str]:
    frontend, backend = tcp(free_port()), tcp(free_port())
    process = cli("run", "--frontend", frontend, "--backend-address", backend, *args)
    process.wait_line(r"^zibrato run: publishers connect to", READY)
    wait_subscribed(frontend)
    return process, frontend


# -- zibrato backend KIND ----------------------------------------------------------------------
def test_backend_jsonl_with_a_separate_broker(cli: Callable[..., Cli], tmp_path: Path) -> None:
    broker = cli("broker", "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0")
    frontend, backend_address = broker.wait_line(BROKER_LINE.pattern, READY).groups()
    path = tmp_path / "out.jsonl"
    backend = cli(
        "backend", "jsonl", "--connect", backend_address, "--flush", "0.3", "--path", str(path)
    )
    backend.wait_line(r"^zibrato backend jsonl: receiving from", READY)
    wait_subscribed(frontend)
    publish(frontend, ("cli.orders", 4), ("cli.orders", 5), timers=3)
    wait_total(path, "cli.orders", 9)
    records = read_records(path)
    orders = [r for r in records if r["name"] == "cli.orders"]
    assert all(r["source"] == "cli-test" and r["type"] == "counter" for r in orders)
    deadline = time.monotonic() + WAIT
    while total(read_records(path), "cli.timer", "count") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert total(read_records(path), "cli.timer", "count") == 3
    backend.popen.send_signal(signal.SIGTERM)
    assert backend.finish(3.0) == 0


# -- zibrato run -------------------------------------------------------------------------------
def test_run_jsonl_end_to_end(cli: Callable[..., Cli], tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    process, frontend = start_run(
        cli, "--backend", "jsonl", "--jsonl-path", str(path), "--flush", "0.3"
    )
    publish(frontend, ("run.hits", 2), ("run.hits", 3))
    wait_total(path, "run.hits", 5)
    health = [r for r in read_records(path) if r["name"] == "zibrato.backend.events"]
    assert health and health[0]["tags"] == {"backend": "jsonl"}
    assert "backends: jsonl" in process.wait_line(r"^zibrato run:").string


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stops_on_a_signal_and_flushes_what_it_aggregated(
    cli: Callable[..., Cli], tmp_path: Path, signum: signal.Signals
) -> None:
    path = tmp_path / "final.jsonl"
    # A 30 s interval: only the final flush at shutdown can write these events.
    process, frontend = start_run(
        cli, "--backend", "jsonl", "--jsonl-path", str(path), "--flush", "30"
    )
    publish(frontend, ("final.hits", 7), ("final.hits", 1), timers=4)
    signalled = time.monotonic()
    process.popen.send_signal(signum)
    code = process.finish(timeout=5.0)
    took = time.monotonic() - signalled
    assert code == 0, process
    assert took < 2.0, f"took {took:.2f} s to stop"
    assert any("zibrato run: stopped" in line for line in process.stdout), process
    records = read_records(path)
    assert total(records, "final.hits") == 8, records
    assert total(records, "cli.timer", "count") == 4


def test_run_without_backend_prints_a_console_table(cli: Callable[..., Cli]) -> None:
    process, frontend = start_run(cli, "--flush", "0.3")
    assert "backends: console" in process.wait_line(r"^zibrato run:").string
    publish(frontend, ("console.hits", 6))
    row = process.wait_line(r"^counter\s+console\.hits\s")
    assert "sum=6" in row.string
    process.wait_line(r"^-- zibrato \d{4}-\d\d-\d\d .* series --$")
    process.wait_line(r"^type\s+name\s+source\s+tags\s+value$")
    assert not [line for line in process.stdout if "zibrato.backend." in line]


def test_run_a_user_backend_by_dotted_path(cli: Callable[..., Cli]) -> None:
    process, frontend = start_run(
        cli, "--backend", "custom_backend:MyBackend", "--marker", "HELLO", "--flush", "0.3"
    )
    assert "backends: custom" in process.wait_line(r"^zibrato run:").string
    publish(frontend, ("custom.hits", 2), ("custom.hits", 3))
    process.wait_line(r"^HELLO counter custom\.hits 5$")


def test_backend_a_user_backend_by_dotted_path(cli: Callable[..., Cli]) -> None:
    broker = cli("broker", "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0")
    frontend, backend_address = broker.wait_line(BROKER_LINE.pattern, READY).groups()
    backend = cli(
        "backend", "custom_backend:MyBackend", "--connect", backend_address, "--flush", "0.3"
    )
    backend.wait_line(r"^zibrato backend custom: receiving from", READY)
    wait_subscribed(frontend)
    publish(frontend, ("dotted.hits", 4))
    backend.wait_line(r"^CUSTOM counter dotted\.hits 4$")


# -- help and errors ---------------------------------------------------------------------------
def test_backend_kind_help_shows_its_options(cli: Callable[..., Cli]) -> None:
    process = cli("backend", "statsd", "--help")
    assert process.finish() == 0, process
    text = "\n".join(process.stdout)
    for option in ("--address", "--prefix", "--tag-style", "--max-packet", "--connect", "--flush"):
        assert option in text, option
    assert "statsd backend options" in text


def test_run_help_shows_every_kinds_prefixed_options(cli: Callable[..., Cli]) -> None:
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


def test_run_help_shows_a_dotted_path_backends_options(cli: Callable[..., Cli]) -> None:
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
    cli: Callable[..., Cli], args: tuple[str, ...], message: str
) -> None:
    process = cli(*args)
    code = process.finish()
    assert code != 0, process
    assert message in "\n".join(process.stderr), process
    assert not [line for line in process.stderr if "Traceback" in line], process


@pytest.mark.parametrize("busy", ["frontend", "backend-address"])
def test_run_on_an_address_in_use_exits_2(cli: Callable[..., Cli], busy: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = tcp(holder.getsockname()[1])
        addresses = {"frontend": tcp(free_port()), "backend-address": tcp(free_port())}
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
