"""Subprocesses for the framework adapters' tests: a site, a server, a broker.

:class:`SiteProcess` runs a command in its own session (so that its children, gunicorn's
workers say, stop with it), gathers its output on daemon threads, bounds every wait, and
stops the whole process group, killing it if it must, and reaps it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO


class SiteProcess:
    """A subprocess of the test site (its own session, so its children stop with it).

    Output lines are gathered on daemon threads; every wait has a deadline;
    :meth:`stop` signals the whole process group, then kills it, and reaps.
    """

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=_gather, args=(self.popen.stdout, self.stdout), daemon=True),
            threading.Thread(target=_gather, args=(self.popen.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def __repr__(self) -> str:
        return (
            f"<{' '.join(self.argv[1:])} rc={self.popen.poll()} "
            f"stdout={self.stdout[-15:]} stderr={self.stderr[-15:]}>"
        )

    def wait_line(
        self, pattern: str, timeout: float = 20.0, *, stderr: bool = False
    ) -> re.Match[str]:
        """Return the match of the first stdout (or stderr) line where ``pattern`` is found."""
        regex = re.compile(pattern)
        lines = self.stderr if stderr else self.stdout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in lines[:]:
                found = regex.search(line)
                if found:
                    return found
            if self.popen.poll() is not None and not self._readers[0].is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s: {self!r}")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def finish(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit by itself; fail after ``timeout`` s."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self!r}") from None
        for reader in self._readers:
            reader.join(timeout)
        return code

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process group (kill it after ``timeout`` s) and reap the process."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        else:
            _signal_group(self.popen.pid, signal.SIGKILL)  # orphans of a finished leader
        for reader in self._readers:
            reader.join(timeout)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _gather(stream: IO[str], sink: list[str]) -> None:
    try:
        for line in stream:
            sink.append(line.rstrip("\n"))
    except ValueError:  # closed during teardown
        pass
