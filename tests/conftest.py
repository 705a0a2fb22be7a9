"""Shared fixtures: a real broker subprocess, subscribers that collect with deadlines, clients.

Everything runs on loopback with ports the OS picks (port 0), and every wait is bounded.

* ``broker``: ``python -m zibrato broker`` on ``tcp://127.0.0.1:0`` twice; yields the
  addresses it prints (``.frontend`` for clients, ``.backend`` for subscribers).
* ``subscribe(level=...)``: a :class:`Collector` (a real ``zibrato.subscriber.Subscriber``)
  on the broker's backend, already proven connected: a probe event got through to it.
* ``new_client(**kwargs)``: a ``Zibrato`` client that is closed after the test.
* ``dead_address``: a TCP address nobody listens on (connections are refused).
* ``run_cli(*args, cwd=None, env=None)``: ``python -m zibrato ARGS`` as a :class:`CliProcess`,
  stopped afterwards (``env`` is added to the inherited environment).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

import pytest

from zibrato import Zibrato, protocol
from zibrato.protocol import Batch
from zibrato.subscriber import Subscriber

PROBE = "zibrato.test.probe"
READY_TIMEOUT = 10.0
EVENT_TIMEOUT = 10.0
BROKER_READY = re.compile(
    r"publishers connect to (?P<frontend>tcp://\S+); subscribers connect to (?P<backend>tcp://\S+)"
)


class Addresses(NamedTuple):
    """Where a broker listens: clients publish to ``frontend``, subscribers read ``backend``."""

    frontend: str
    backend: str


# -- subprocesses --------------------------------------------------------------------------
class CliProcess:
    """``python -m zibrato ARGS`` in a subprocess; its output is read on daemon threads.

    It runs in ``cwd`` (default: ours) with ``env`` added to the inherited environment;
    ``module`` runs another command (``flask``).
    """

    def __init__(
        self,
        *args: str,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        module: str = "zibrato",
    ) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(
                target=_read_lines, args=(self.popen.stdout, self.stdout), daemon=True
            ),
            threading.Thread(
                target=_read_lines, args=(self.popen.stderr, self.stderr), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    def __repr__(self) -> str:
        return (
            f"<zibrato {' '.join(self.args)} rc={self.popen.poll()} "
            f"stdout={self.stdout[-20:]} stderr={self.stderr[-20:]}>"
        )

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Return the first stdout line that satisfies ``predicate``, waiting ``timeout`` s."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            lines = self.stdout[:]
            for line in lines[seen:]:
                if predicate(line):
                    return line
            seen = len(lines)
            finished = self.popen.poll() is not None and not self._readers[0].is_alive()
            if finished and len(self.stdout) == seen:
                raise AssertionError(f"process exited before the expected line: {self!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no expected line within {timeout} s: {self!r}")
            time.sleep(0.01)

    def wait_line(self, pattern: str, timeout: float = EVENT_TIMEOUT) -> re.Match[str]:
        """Return the match of the first stdout line that ``pattern`` is found in."""
        regex = re.compile(pattern)
        match = regex.search(self.wait_for_line(lambda text: bool(regex.search(text)), timeout))
        assert match is not None
        return match

    def lines_matching(self, predicate: Callable[[str], bool]) -> list[str]:
        return [line for line in self.stdout[:] if predicate(line)]

    def signal(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """Return the exit code, or None if the process is still running after ``timeout`` s."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def finish(self, timeout: float = EVENT_TIMEOUT) -> int:
        """Wait for the process to exit by itself (failing after ``timeout`` s) and its output."""
        code = self.wait(timeout)
        if code is None:
            raise AssertionError(f"still running after {timeout} s: {self!r}")
        for reader in self._readers:
            reader.join(timeout)
        return code

    def stop(self, timeout: float = 5.0) -> int:
        """Terminate (then kill after ``timeout`` s), reap, and close the pipes."""
        if self.popen.poll() is None:
            self.popen.terminate()
            if self.wait(timeout) is None:
                self.popen.kill()
                self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        return self.popen.returncode


def _read_lines(stream: IO[str], sink: list[str]) -> None:
    try:
        for line in stream:
            sink.append(line.rstrip("\n"))
    except ValueError:  # the stream was closed under us during teardown
        pass


@pytest.fixture
def run_cli() -> Iterator[Callable[..., CliProcess]]:
    """Start ``python -m zibrato ARGS``; every process is stopped and reaped afterwards
    (the newest first: a backend before the broker it reads from)."""
    started: list[CliProcess] = []

    def run(
        *args: str,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        module: str = "zibrato",
    ) -> CliProcess:
        process = CliProcess(*args, cwd=cwd, env=env, module=module)
        started.append(process)
        return process

    yield run
    for process in reversed(started):
        process.stop()


def start_broker(run_cli: Callable[..., CliProcess]) -> tuple[CliProcess, Addresses]:
    """Start a broker on OS-chosen ports; return it once it prints where it listens."""
    process = run_cli(
        "broker", "--frontend", "tcp://127.0.0.1:0", "--backend-address", "tcp://127.0.0.1:0"
    )
    line = process.wait_for_line(lambda text: "publishers connect to" in text, READY_TIMEOUT)
    match = BROKER_READY.search(line)
    assert match, line
    return process, Addresses(match["frontend"], match["backend"])


@pytest.fixture
def broker_process(run_cli: Callable[..., CliProcess]) -> tuple[CliProcess, Addresses]:
    """A real ``zibrato broker`` subprocess and its addresses."""
    return start_broker(run_cli)


@pytest.fixture
def broker(broker_process: tuple[CliProcess, Addresses]) -> Addresses:
    """The addresses of a real ``zibrato broker`` subprocess (terminated after the test)."""
    return broker_process[1]


# -- receiving -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    """One event as a subscriber sees it: tags merged, source resolved."""

    type: str
    name: str
    value: Any
    delta: bool
    level: str
    source: str | None
    tags: dict[str, str]
    publisher: str
    timestamp: float
    rate: float = 1.0  # a sixth event field: the client's sample rate


@dataclass
class Collector:
    """A real Subscriber that gathers every event it receives; every wait has a deadline.

    Probe events (see :meth:`ready`) are counted in ``probes`` and kept out of ``received``.
    """

    address: str
    level: str = "debug"
    received: list[Received] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    invalid: list[tuple[str, Sequence[Any]]] = field(default_factory=list)
    probes: int = 0

    def __post_init__(self) -> None:
        self.subscriber = Subscriber(self.address, level=self.level)

    def close(self) -> None:
        self.subscriber.close()

    def poll(self, timeout: float) -> bool:
        """Receive for at most ``timeout`` s; return whether any batch arrived."""
        batch = self.subscriber.receive(timeout)
        got = False
        while batch is not None:
            got = True
            self._add(batch)
            batch = self.subscriber.receive_ready()
        return got

    def _add(self, batch: Batch) -> None:
        self.batches.append(batch)
        for event in batch.events:
            reason = protocol.check_event(event)
            if reason is not None:
                self.invalid.append((reason, event))
                continue
            kind, name, value, source, tags = event[:5]
            if name == PROBE:
                self.probes += 1
                continue
            self.received.append(
                Received(
                    type=protocol.KIND_NAMES[kind],
                    name=name,
                    value=value,
                    delta=kind == protocol.Kind.GAUGE_DELTA,
                    level=batch.level,
                    source=source or batch.source,
                    tags=protocol.merged_tags(batch.tags, tags),
                    publisher=batch.publisher,
                    timestamp=batch.timestamp,
                    rate=event[5] if len(event) > 5 else 1.0,
                )
            )

    def wait_for(
        self,
        predicate: Callable[[list[Received]], bool],
        what: str,
        timeout: float = EVENT_TIMEOUT,
    ) -> list[Received]:
        """Receive until ``predicate(received)`` holds; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not predicate(self.received):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; received {self.summary()}"
                )
            self.poll(min(0.05, remaining))
        return self.received

    def summary(self) -> str:
        """How many events of each (level, name) arrived, and their sum."""
        counts: dict[tuple[str, str], list[float]] = {}
        for event in self.received:
            entry = counts.setdefault((event.level, event.name), [0, 0])
            entry[0] += 1
            entry[1] += event.value
        return (
            ", ".join(
                f"{level}/{name}: {count} event(s), sum {total}"
                for (level, name), (count, total) in sorted(counts.items())
            )
            or "nothing"
        )

    def wait_names(self, *names: str, timeout: float = EVENT_TIMEOUT) -> list[Received]:
        """Wait until at least one event of each of ``names`` has arrived."""
        return self.wait_for(
            lambda got: set(names) <= {event.name for event in got}, f"names {names}", timeout
        )

    def settle(self, quiet: float = 0.3, timeout: float = 5.0) -> list[Received]:
        """Keep receiving until nothing arrives for ``quiet`` s (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll(quiet):
            pass
        return self.received

    def named(self, name: str) -> list[Received]:
        return [event for event in self.received if event.name == name]

    def one(self, name: str) -> Received:
        events = self.named(name)
        assert len(events) == 1, f"expected exactly one {name!r}, got {events}"
        return events[0]

    def total(self, name: str) -> float:
        return sum(event.value for event in self.named(name))

    def ready(self, frontend: str, timeout: float = READY_TIMEOUT) -> None:
        """Publish probes through a throwaway client until one gets through to us.

        After this the broker knows our subscription, so a new client's first events
        (held by the publisher until the broker tells it about subscriptions) reach us.
        """
        probe = Zibrato(publish=frontend)
        try:
            deadline = time.monotonic() + timeout
            while self.probes == 0:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no probe reached the subscriber within {timeout} s")
                probe.incr(PROBE, level=self.subscriber.level)
                probe.flush(timeout=0.1)
                self.poll(0.05)
        finally:
            probe.close()


@pytest.fixture
def subscribe(broker: Addresses) -> Iterator[Callable[..., Collector]]:
    """Make a Collector on the broker's backend; it is ready (a probe got through) when returned."""
    made: list[Collector] = []

    def make(level: str = "debug", *, ready: bool = True) -> Collector:
        collector = Collector(broker.backend, level)
        made.append(collector)
        if ready:
            collector.ready(broker.frontend)
        return collector

    yield make
    for collector in made:
        collector.close()


# -- clients ---------------------------------------------------------------------------------
@pytest.fixture
def new_client() -> Iterator[Callable[..., Zibrato]]:
    """Make ``Zibrato(**kwargs)`` clients that are closed after the test."""
    clients: list[Zibrato] = []

    def make(*args: Any, **kwargs: Any) -> Zibrato:
        client = Zibrato(*args, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def dead_address() -> Iterator[str]:
    """A loopback TCP address that is bound but not listening: every connection is refused."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        yield f"tcp://127.0.0.1:{holder.getsockname()[1]}"
    finally:
        holder.close()
