"""Helpers the fault suite shares: real subprocesses (a broker that can be killed, frozen
and restarted on the same ports; the instrumented ``app.py``), a receiver that counts what
arrives, non-ZeroMQ peers, and /proc readings. Every wait has a deadline.

``SOAK`` (``ZIBRATO_SOAK=1``, set by ``make soak``) selects the full-size runs; without
it each test runs a CI-sized version of the same fault.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from zibrato.protocol import Batch
from zibrato.subscriber import LossTracker, Subscriber

SOAK = os.environ.get("ZIBRATO_SOAK") == "1"
HERE = Path(__file__).parent
APP = HERE / "app.py"
READY_TIMEOUT = 15.0
BROKER_READY = re.compile(r"publishers connect to (tcp://\S+); subscribers connect to (tcp://\S+)")


def scaled(ci: float, soak: float) -> Any:
    """The CI-sized figure, or the full one under ``make soak``."""
    return soak if SOAK else ci


def report(figure: str) -> None:
    """Print a measured figure (shown with ``pytest -s``; docs/reliability.md quotes them)."""
    print(f"\n[reliability] {figure}", flush=True)


# -- /proc -----------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    """Resident memory of process ``pid`` in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- subprocesses ----------------------------------------------------------------------------
class Lines:
    """The stdout (and stderr) lines of a subprocess, read on daemon threads."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = []
        for stream, sink in ((popen.stdout, self.out), (popen.stderr, self.err)):
            if stream is not None:
                reader = threading.Thread(target=_read, args=(stream, sink), daemon=True)
                reader.start()
                self._readers.append(reader)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Return the match of the first stdout line matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.out[:]:
                if match := regex.search(line):
                    return match
            if self.popen.poll() is not None and not self._readers[0].is_alive():
                raise AssertionError(f"exited ({self.popen.returncode}) first: {self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s: {self.tail()}")
            time.sleep(0.01)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out[:] if line.startswith("{")]

    def join(self, timeout: float) -> None:
        for reader in self._readers:
            reader.join(timeout)

    def tail(self) -> str:
        return f"stdout={self.out[-10:]} stderr={self.err[-10:]}"


def _read(stream: IO[str], sink: list[str]) -> None:
    try:
        for line in stream:
            sink.append(line.rstrip("\n"))
    except ValueError:
        pass


def stop_process(popen: subprocess.Popen[str], timeout: float = 5.0) -> None:
    """Continue, terminate, then kill ``popen`` if it will not go; reap it."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGCONT)
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout)
    for stream in (popen.stdin, popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()


class BrokerProcess:
    """``zibrato broker`` in a subprocess that can be killed, frozen and restarted.

    The first start binds port 0; restarts bind the same ports again, as a real restart
    would, so clients and subscribers reconnect to it on their own.
    """

    def __init__(self) -> None:
        self.frontend = "tcp://127.0.0.1:0"
        self.backend = "tcp://127.0.0.1:0"
        self.popen: subprocess.Popen[str] | None = None
        self.lines: Lines | None = None
        self.restarts = 0
        self.killed_at = 0.0  # time.time() of the last kill (restart())

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> BrokerProcess:
        """Start (again, on the same ports); return once it says where it listens."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self.popen = subprocess.Popen(
                [
                    *(sys.executable, "-m", "zibrato", "broker"),
                    *("--frontend", self.frontend, "--backend-address", self.backend),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.lines = Lines(self.popen)
            try:
                match = self.lines.wait_for(BROKER_READY.pattern, READY_TIMEOUT)
                break
            except AssertionError:
                # The old incarnation's ports can take a moment to be free (exit 2).
                if self.popen.returncode != 2 or time.monotonic() > deadline:
                    raise
                stop_process(self.popen)
                time.sleep(0.1)
        self.frontend, self.backend = match[1], match[2]
        return self

    def kill(self) -> None:
        """SIGKILL: the broker dies with whatever it held."""
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait(10)
        stop_process(self.popen)

    def restart(self) -> float:
        """Kill, start again on the same ports; return the time it was ready.

        ``killed_at`` (wall clock) is when the old broker was gone: a batch that a
        publisher stamped later can only have come through the new one.
        """
        self.kill()
        self.killed_at = time.time()
        self.start()
        self.restarts += 1
        return time.monotonic()

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def signal(self, signum: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(signum)

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen)


@contextmanager
def broker_process() -> Iterator[BrokerProcess]:
    broker = BrokerProcess().start()
    try:
        yield broker
    finally:
        broker.stop()


class AppProcess:
    """``app.py``: an instrumented application recording at a steady rate."""

    def __init__(self, publish: str, *, rate: float = 5000, linger: float = 0.25) -> None:
        self.popen = subprocess.Popen(
            [
                *(sys.executable, str(APP), "--publish", publish),
                *("--rate", str(rate), "--linger", str(linger)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = Lines(self.popen)
        ready = self.lines.wait_for(r'"ready"', READY_TIMEOUT)
        self.info = json.loads(ready.string)
        self.pid = self.popen.pid

    def command(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text + "\n")
        self.popen.stdin.flush()

    def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop recording; return the final report (stats after close, latencies)."""
        self.command("stop")
        code = self.popen.wait(timeout)
        self.lines.join(5)
        assert code == 0, f"app exited {code}: {self.lines.tail()}"
        finals = [line for line in self.lines.json_lines() if line.get("final")]
        assert finals, self.lines.tail()
        return finals[-1]

    def stop(self) -> None:
        stop_process(self.popen)


@contextmanager
def app_process(publish: str, **options: Any) -> Iterator[AppProcess]:
    app = AppProcess(publish, **options)
    try:
        yield app
    finally:
        app.stop()


# -- receiving ---------------------------------------------------------------------------------
@dataclass
class Receiver:
    """A real Subscriber that counts events per name; it stays up through broker restarts."""

    address: str
    subscriber: Subscriber = field(init=False)
    counts: dict[str, int] = field(default_factory=dict)
    # Losses per level: the app records on "info"; drop reports travel on "warning".
    losses: dict[str, LossTracker] = field(default_factory=dict)
    # The latest send time (the publisher's clock) of any batch received.
    newest_sent: float = 0.0

    def __post_init__(self) -> None:
        self.subscriber = Subscriber(self.address)

    def poll(self, timeout: float) -> bool:
        batch = self.subscriber.receive(timeout)
        got = False
        while batch is not None:
            got = True
            self._count(batch)
            batch = self.subscriber.receive_ready()
        return got

    def _count(self, batch: Batch) -> None:
        self.losses.setdefault(batch.level, LossTracker()).observe(batch)
        self.newest_sent = max(self.newest_sent, batch.timestamp)
        for event in batch.events:
            name = event[1]
            self.counts[name] = self.counts.get(name, 0) + 1

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def lost_on(self, level: str) -> int:
        """Events of ``level`` lost on the way (from the jumps in ``sent_before``)."""
        tracker = self.losses.get(level)
        return tracker.lost_events if tracker else 0

    def drain(self, quiet: float = 0.05) -> None:
        """Take in what has already arrived."""
        while self.poll(quiet):
            pass

    def wait_until(self, done: Callable[[Receiver], bool], what: str, timeout: float) -> float:
        """Receive until ``done(self)``; return the time that took; fail after ``timeout``."""
        started = time.monotonic()
        while not done(self):
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no {what} within {timeout} s; counts {self.counts}")
            self.poll(0.02)
        return time.monotonic() - started

    def settle(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll(quiet):
            pass

    def close(self) -> None:
        self.subscriber.close()


@contextmanager
def receiver(address: str, **options: Any) -> Iterator[Receiver]:
    made = Receiver(address, **options)
    try:
        yield made
    finally:
        made.close()


# -- peers that are not ZeroMQ ---------------------------------------------------------------
class RawPeer:
    """A loopback TCP server that answers every connection with ``reply(first_bytes)``."""

    def __init__(self, reply: Callable[[bytes], bytes]) -> None:
        self.reply = reply
        self.connections = 0
        self._closed = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.address = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.05)  # so that close() is noticed promptly
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(2.0)
                first = conn.recv(4096)
                conn.sendall(self.reply(first))
            except OSError:
                pass

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()


def http_400(first: bytes) -> bytes:
    """What a strict HTTP server answers to bytes that are not a request (nginx, Node)."""
    body = b"<html><body><h1>400 Bad Request</h1></body></html>\n"
    return (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nConnection: close\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


@contextmanager
def raw_peer(reply: Callable[[bytes], bytes]) -> Iterator[RawPeer]:
    peer = RawPeer(reply)
    try:
        yield peer
    finally:
        peer.close()


def run_python(
    code: str, *args: str, timeout: float = 60.0, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code ARGS`` to completion (bounded); return its result."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
