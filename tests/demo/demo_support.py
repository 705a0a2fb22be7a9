"""Run ``python -m demo_site.run`` as a user would, on ports the system picks, and watch it.

A :class:`DemoRun` starts the runner in a session (process group) of its own, as a
terminal starts a command, so a test can send SIGINT to the whole group like Ctrl-C does.
Every process of a run, however deep, carries ``ZIBRATO_DEMO_DATA=<its own folder>`` in
its environment: :func:`processes_of` finds them all in ``/proc``, orphans included.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from process_support import SiteProcess

from demo_site import prepare

ROOT = Path(__file__).resolve().parents[2]
DATA_ENV = "ZIBRATO_DEMO_DATA"
READY_TIMEOUT = 120.0  # the first start prepares databases and boots two gunicorns
STOP_TIMEOUT = 20.0  # a hang detector, not a performance figure
WAIT = 60.0
ON_RANDOM_PORTS = (
    "--frontend=tcp://127.0.0.1:0",
    "--backend-address=tcp://127.0.0.1:0",
    "--django-listen=127.0.0.1:0",
    "--flask-listen=127.0.0.1:0",
    "--dashboard-listen=127.0.0.1:0",
    "--prometheus-listen=127.0.0.1:0",
    "--recommendations-listen=127.0.0.1:0",
)
URLS = {
    "dashboard": r"dashboard backend: serving (http://\S+/) ",
    "prometheus": r"prometheus backend: serving (http://\S+/metrics) ",
    "django": r"Django shop: (http://\S+/) ",
    "flask": r"Flask warehouse: (http://\S+/) ",
    "recommendations": r"recommendation service: (http://\S+)/recommendations ",
}
RUNNING = "zibrato demo: running; Ctrl-C to stop"


def copy_prepared(prepared: Path, data: Path) -> Path:
    """Copy prepared databases (and their stamp) into a fresh data folder; return it."""
    data.mkdir(parents=True, exist_ok=True)
    for name in (*prepare.DATABASES, prepare.STAMP):
        shutil.copy2(prepared / name, data / name)
    return data.resolve()


class DemoRun(SiteProcess):
    """``python -m demo_site.run ARGS`` in its own process group; its output is collected."""

    def __init__(self, *args: str, data: Path, env: dict[str, str] | None = None) -> None:
        self.data = data.resolve()
        super().__init__(
            [sys.executable, "-m", "demo_site.run", *args, f"--data={self.data}"],
            {**os.environ, DATA_ENV: str(self.data), **(env or {})},
            cwd=ROOT,
        )
        self.running_at: float | None = None  # time.time() when it said it was running

    def __repr__(self) -> str:
        return (
            f"<demo rc={self.popen.poll()} stdout={self.stdout[-30:]} stderr={self.stderr[-30:]}"
            f" logs={self.log_tails()}>"
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tails(self) -> dict[str, list[str]]:
        tails = {}
        for log in sorted((self.data / "logs").glob("*.log")):
            with contextlib.suppress(OSError):
                tails[log.name] = log.read_text(errors="replace").splitlines()[-8:]
        return tails

    def wait_running(self, timeout: float = READY_TIMEOUT) -> dict[str, str]:
        """Wait for "running; Ctrl-C to stop"; return the URLs it printed by part."""
        self.wait_line(re.escape(RUNNING), timeout)
        self.running_at = time.time()
        return {part: self.wait_line(pattern, 1)[1] for part, pattern in URLS.items()}

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Return the exit status once the runner exits (failing after ``timeout`` s)."""
        return self.finish(timeout)

    def kill(self) -> None:
        """Leave nothing behind, whatever state the run is in (the test's cleanup)."""
        try:
            self.stop(STOP_TIMEOUT)
        finally:
            # The sites' gunicorns run in sessions of their own: found by the run's marker.
            for pid in processes_of(self.data):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def processes_of(data: Path) -> dict[int, str]:
    """Return ``{pid: command line}`` of the live processes of the run that uses ``data``."""
    marker = f"{DATA_ENV}={data}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue  # a zombie has exited; only its parent's wait is pending
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


def get_json(url: str, **params: Any) -> Any:
    with requests.get(url, params=params, timeout=10) as response:
        assert response.status_code == 200, (url, response.status_code, response.text[:500])
        return response.json()


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Return ``fetch()`` once ``done`` holds for it; fail after ``WAIT`` s."""
    deadline = time.monotonic() + WAIT
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT} s waiting for {what}: {result!r}")
        time.sleep(0.25)
