"""The demo's child processes: started in our process group, logged to files, always reaped.

They stay in the runner's process group, so a terminal's Ctrl-C reaches every one of them
at once, as it would reach a shell pipeline. Each handles that signal by itself (gunicorn
stops quickly, the traffic generator finishes its requests); the runner then sends
SIGTERM to whatever still runs (which tells the same thing, once more, harmlessly), waits
a bounded time and kills what is left, grandchildren included (a gunicorn master's
workers), so nothing outlives the demo. Every child carries the run's marker in its
environment, so that processes whose parent died (a killed gunicorn master's workers) are
found and stopped as well.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from demo_site.paths import REPOSITORY

STOP_TIMEOUT = 4.0  # seconds a child gets to stop after SIGTERM before it is killed
# Set in every child's environment (inherited by its own children): what the run started.
RUN_ENV = "ZIBRATO_DEMO_RUN"
_POLL = 0.05


class Child:
    """One child process whose output goes to ``log_path``.

    >>> child = Child("traffic", [sys.executable, "-m", "demo_site.traffic"], log_path=path)
    >>> child.start(); ...; stop_all([child])                     # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or {})
        self.pass_fds = tuple(pass_fds)
        self.popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Child {self.name} pid={self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has exited (and been reaped), else None."""
        return self.popen.poll() if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        """Start the child in the repository's root, its output appended to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPOSITORY,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=self.pass_fds,
            )

    def log_tail(self, lines: int = 5) -> str:
        """Return the last ``lines`` lines of the child's output, joined by `` | ``."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def stop_all(
    children: Sequence[Child], timeout: float = STOP_TIMEOUT, *, marker: str | None = None
) -> None:
    """Stop ``children`` together: SIGTERM, a bounded wait, then SIGKILL; reap them all.

    A child killed at the end takes its own descendants with it (found before the kill),
    so a gunicorn master that would not stop leaves no worker behind. With ``marker``
    (the :data:`RUN_ENV` value every child was started with), the processes that carry it
    but are no longer below a child are stopped too: the workers of a gunicorn master that
    died, which nobody else would signal.
    """
    for child in children:
        if child.running:
            assert child.popen is not None
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
    _signal_all(orphans(children, marker), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
        any(child.running for child in children) or orphans(children, marker)
    ):
        time.sleep(_POLL)
    for child in children:
        if child.running:
            assert child.popen is not None
            _signal_all([*descendants(child.popen.pid), child.popen.pid], signal.SIGKILL)
        if child.popen is not None:
            child.popen.wait()
    # Orphans are not ours to reap (init adopted them): wait until they are gone.
    _signal_all(orphans(children, marker), signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while orphans(children, marker) and time.monotonic() < deadline:
        time.sleep(_POLL)


def orphans(children: Sequence[Child], marker: str | None) -> list[int]:
    """Return the live processes started with ``marker`` that are no longer below a child."""
    if marker is None:
        return []
    ours = {os.getpid()}
    for child in children:
        if child.running:
            assert child.popen is not None
            ours.update([child.popen.pid, *descendants(child.popen.pid)])
    return [pid for pid in marked(marker) if pid not in ours]


def marked(marker: str) -> list[int]:
    """Return the live (not zombie) processes whose environment has ``RUN_ENV=marker``."""
    wanted = f"{RUN_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                found.append(int(entry.name))
    return found


def new_marker() -> str:
    """Return a value for :data:`RUN_ENV` that no other run (a parallel test) shares."""
    return f"{os.getpid()}-{secrets.token_hex(8)}"


def _signal_all(pids: Sequence[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def descendants(pid: int) -> list[int]:
    """Return the pids of ``pid``'s children, grandchildren... (Linux ``/proc``; else [])."""
    parents: dict[int, int] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name (field 2) may hold spaces and parentheses: split after it.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found
