"""Running a server for a test: paths to what ``make test`` installed, free ports, bounded
waits, and :class:`ServerProcess`, which starts a server and always stops it.

Every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from zibrato.backends.base import Backend

VENV = Path(sys.executable).parent.parent  # .venv/bin/python: not resolved, on purpose
SERVERS = VENV / "servers"
STATSD_JS = SERVERS / "statsd" / "node_modules" / "statsd" / "stats.js"
CARBON_ROOT = SERVERS / "carbon"
PROMETHEUS = VENV / "bin" / "prometheus"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
WAIT = 30.0  # the longest a test waits for a server to hold what was sent
T = TypeVar("T")


def require(path: Path) -> Path:
    """Return ``path``, or fail saying how to install the servers."""
    if not path.exists():
        raise AssertionError(f"{path} is missing: run `make test` (.ci/get-servers installs it)")
    return path


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """Return a loopback port the OS just handed out (for servers that need a number)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """Poll ``check`` until it returns something true; return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_received(backend: Backend, events: int, timeout: float = WAIT) -> None:
    """Wait until ``backend`` has received at least ``events`` events."""
    wait_until(
        lambda: backend.received_events >= events,
        f"{events} events to reach the backend (it has {backend.received_events})",
        timeout,
    )


class ServerProcess:
    """A server subprocess; its output goes to ``log``. Stopped by SIGTERM, then SIGKILL."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self._out: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=log.parent,
        )

    def __repr__(self) -> str:
        return f"<{Path(self.argv[0]).name} rc={self.popen.poll()} log={self.tail()!r}>"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str] | None:
        """Return the first match of ``pattern`` in the log, or None if the process exits."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text())
            if match or self.popen.poll() is not None:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s: {self!r}")
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Terminate (kill after ``timeout`` s), reap, close the log; return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._out.close()
        return self.popen.returncode


def start_with_retries(start: Callable[[], ServerProcess | None], what: str) -> ServerProcess:
    """Run ``start`` (which returns None when its port was taken) at most three times."""
    for _ in range(3):
        process = start()
        if process is not None:
            return process
    raise AssertionError(f"{what} could not bind its ports three times")
