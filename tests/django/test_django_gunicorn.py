"""R3 (issue 9): gunicorn ``--preload`` with 4 sync and with 4 gthread workers.

The test site is served by a real gunicorn through a real broker subprocess. The app's
own code records a metric at import, so under ``--preload`` the client exists in the
master before it forks. Every worker's request metrics must arrive (counted per worker
pid, from each batch's publisher id, against the pids the responses name), none twice.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django_support import SiteProcess, site_env

from zibrato import Zibrato
from zibrato.subscriber import Subscriber

REQUESTS = 120
CONCURRENCY = 12
PROBE = "djtest.r3.probe"


class Received:
    """Events from a real subscriber on the broker, as (publisher pid, name, tags, value)."""

    def __init__(self, address: str) -> None:
        self.subscriber = Subscriber(address, level="debug")
        self.events: list[tuple[int, str, dict[str, str], float]] = []

    def poll(self, timeout: float) -> None:
        batch = self.subscriber.receive(timeout)
        while batch is not None:
            pid = int(batch.publisher.split("-")[0], 16)
            for _kind, name, value, _source, tags in batch.events:
                self.events.append((pid, name, dict(tags or {}), value))
            batch = self.subscriber.receive_ready()

    def named(self, name: str) -> list[tuple[int, str, dict[str, str], float]]:
        return [event for event in self.events if event[1] == name]

    def ready(self, frontend: str, timeout: float = 20.0) -> None:
        """Publish probes until one comes back: the broker knows our subscription."""
        probe = Zibrato(publish=frontend)
        try:
            deadline = time.monotonic() + timeout
            while not self.named(PROBE):
                assert time.monotonic() < deadline, "no probe came back through the broker"
                probe.incr(PROBE)
                probe.flush(timeout=0.1)
                self.poll(0.05)
        finally:
            probe.close()


@pytest.fixture
def processes() -> Iterator[list[SiteProcess]]:
    started: list[SiteProcess] = []
    yield started
    for process in reversed(started):
        process.stop()


def fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(response.read())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_r3_every_gunicorn_workers_events_arrive_once(
    processes: list[SiteProcess], tmp_path: Path, worker_class: str
) -> None:
    broker = SiteProcess(
        [
            sys.executable,
            "-m",
            "zibrato",
            "broker",
            "--frontend",
            "tcp://127.0.0.1:0",
            "--backend",
            "tcp://127.0.0.1:0",
        ],
        site_env(),
    )
    processes.append(broker)
    found = broker.wait_line(
        r"publishers connect to (tcp://\S+); subscribers connect to (tcp://\S+)"
    )
    frontend, backend = found[1], found[2]
    received = Received(backend)
    try:
        received.ready(frontend)
        gunicorn = SiteProcess(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--preload",
                "--workers",
                "4",
                "--worker-class",
                worker_class,
                "--threads",
                "4",
                "--bind",
                "127.0.0.1:0",
                "--graceful-timeout",
                "5",
                "djtest.wsgi:application",
            ],
            site_env(DJTEST_PUBLISH=frontend, DJTEST_DB=str(tmp_path / "db.sqlite3")),
        )
        processes.append(gunicorn)
        port = gunicorn.wait_line(r"Listening at: http://127\.0\.0\.1:(\d+)", 30, stderr=True)[1]
        gunicorn.wait_line(r"Booting worker with pid", 30, stderr=True)
        url = f"http://127.0.0.1:{port}/pid/?sleep=0.02"
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            served = Counter(pool.map(lambda _: fetch(url), range(REQUESTS)))
        assert sum(served.values()) == REQUESTS
        if worker_class == "sync":
            assert len(served) >= 2, f"sync workers share the load: {served}"

        def arrived() -> Counter[int]:
            return Counter(
                pid
                for pid, _, tags, _ in received.named("http.server.request.duration")
                if tags.get("http.route") == "pid/"
            )

        deadline = time.monotonic() + 30
        while arrived() != served and time.monotonic() < deadline:
            received.poll(0.1)
        assert arrived() == served, f"per worker pid: received {arrived()}, served {served}"
        master = gunicorn.popen.pid
        assert master not in served  # the workers, not the master, served the requests

        gunicorn.stop()  # SIGTERM: a graceful stop, each worker flushes as it exits
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            received.poll(0.1)
        assert arrived() == served, "an event arrived twice"
        assert [pid for pid, *_ in received.named("djtest.loaded")] == [master]
    finally:
        received.subscriber.close()
