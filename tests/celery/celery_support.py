"""Real Celery workers and beat for the tests: ``celery -A taskapp ...`` in subprocesses.

Each runs in its own session (``process_support.SiteProcess``), on a queue of its own, with
its own ``SOURCE``, publishing to the test's zibrato broker; :func:`stop` stops the whole
process group (prefork children included) and fails if any process of it is left.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from process_support import SiteProcess

from zibrato.client import PUBLISH_ENV

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
READY = r"@\S+ ready\."
POOLS = ("prefork", "threads", "solo")
# The publishing side's clock runs this far behind: every queue wait it stamps grows by it.
PRODUCER_SKEW = 30.0


class BrokerAddresses(NamedTuple):
    """Where the worker tests' zibrato broker listens."""

    frontend: str
    backend: str


START_TIMEOUT = 30.0


def celery_env(broker_url: str, publish: str, source: str, **extra: str) -> dict[str, str]:
    """The environment of a worker or beat: the task app's broker, Django, the publish address."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        TASKAPP_BROKER=broker_url,
        TASKAPP_SOURCE=source,
        ZIBRATO_TEST_DJANGO="1",
        C_FORCE_ROOT="1",  # CI runs as root; the tasks use JSON, never pickle
        **{PUBLISH_ENV: publish},
        **extra,
    )
    return env


def start_worker(
    env: dict[str, str], *, pool: str, queue: str, concurrency: int = 2, extra: tuple[str, ...] = ()
) -> SiteProcess:
    """Start ``celery worker`` and return it once it says it is ready."""
    argv = [
        sys.executable,
        *("-m", "celery", "-A", "taskapp", "worker"),
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--queues={queue}",
        f"--hostname={queue}@%h",
        "--loglevel=info",
        "--without-mingle",
        "--without-gossip",
        *extra,
    ]
    worker = SiteProcess(argv, env, cwd=HERE)
    try:
        worker.wait_line(READY, START_TIMEOUT, stderr=True)
    except BaseException:
        stop(worker)
        raise
    return worker


def start_beat(env: dict[str, str], schedule: Path) -> SiteProcess:
    """Start ``celery beat`` (its schedule file in ``schedule``)."""
    argv = [
        sys.executable,
        *("-m", "celery", "-A", "taskapp", "beat"),
        f"--schedule={schedule}",
        "--max-interval=1",
        "--loglevel=info",
    ]
    return SiteProcess(argv, env, cwd=HERE)


def group_members(pgid: int) -> list[int]:
    """Return the live (not zombie) processes of process group ``pgid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == pgid:
            found.append(int(entry.name))
    return found


def stop(process: SiteProcess, timeout: float = 15.0) -> None:
    """Stop a worker or beat and everything it started; fail if a process is left."""
    pgid = process.popen.pid
    process.stop(timeout)
    assert wait_until(lambda: not group_members(pgid), 5.0), (
        f"processes left behind: {group_members(pgid)}"
    )


def terminate(process: SiteProcess) -> None:
    """Send SIGTERM to the worker's main process alone (a warm shutdown)."""
    process.signal(signal.SIGTERM)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` every 20 ms for at most ``timeout`` s; return its last value."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
