"""R3 for any web adapter: gunicorn ``--preload``, every worker's events arrive, none twice.

:func:`every_workers_events_arrive_once` runs a real broker subprocess and a real
gunicorn (4 workers of the given class) serving a site whose own code records a metric
at import, so that under ``--preload`` the client exists in the master before it forks.
It serves requests concurrently, counts the request metrics that reach a real
subscriber per worker pid (from each batch's publisher id) against the pids the
responses name, stops gunicorn gracefully, and checks that nothing arrived twice, that
the import-time metric came from the master alone, and that every worker is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from process_support import SiteProcess

from zibrato import Zibrato
from zibrato.subscriber import Subscriber

REQUESTS = 120
CONCURRENCY = 12
PROBE = "tests.r3.probe"
BROKER_READY = r"publishers connect to (tcp://\S+); subscribers connect to (tcp://\S+)"


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

    def per_pid(self, route: str) -> Counter[int]:
        """Return how many request timers of ``route`` each publisher pid sent."""
        return Counter(
            pid
            for pid, _, tags, _ in self.named("http.server.request.duration")
            if tags.get("http.route") == route
        )

    def poll_until(self, done: Callable[[], bool], *, seconds: float) -> None:
        """Receive until ``done()`` or for ``seconds`` at most."""
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            self.poll(0.1)

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


def fetch(url: str) -> int:
    """Return the pid a worker answered."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(response.read())


WORKERS = 4
READY_CONFIG = Path(__file__).resolve().parent / "gunicorn_ready.py"


def workers_ready(gunicorn: SiteProcess, count: int, timeout: float) -> None:
    """Wait until ``count`` workers have their signal handlers (``gunicorn_ready.py``):
    a SIGTERM sent before that is lost to the worker, which then outlives the stop."""
    ready = re.compile(r"zibrato-test: worker (\d+) ready")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {found[1] for line in gunicorn.stderr[:] if (found := ready.search(line))}
        if len(pids) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} workers not ready within {timeout} s: {gunicorn!r}")


def every_workers_events_arrive_once(
    *,
    app: str,
    env: Callable[[str], Mapping[str, str]],
    worker_class: str,
    path: str,
    route: str,
    loaded: str,
    broker_frozen_at_stop: bool = False,
) -> None:
    """Serve ``path`` (which answers the worker's pid) through gunicorn; check R3.

    ``app`` is gunicorn's APP_MODULE, ``env(frontend)`` the environment that makes the
    site publish to the broker, ``route`` the ``http.route`` of ``path`` and ``loaded``
    the metric the site records at import. ``broker_frozen_at_stop``: the broker is
    frozen (SIGSTOP) before gunicorn is stopped, which must stop within its graceful
    timeout all the same (every worker's close() is bounded). Every process it starts
    is stopped and reaped before it returns (the newest first).
    """
    with contextlib.ExitStack() as stack:
        addresses = "--frontend tcp://127.0.0.1:0 --backend-address tcp://127.0.0.1:0"
        broker = started(stack, ["-m", "zibrato", "broker", *addresses.split()], os.environ)
        frontend, backend = broker.wait_line(BROKER_READY).groups()
        received = Received(backend)
        stack.callback(received.subscriber.close)
        received.ready(frontend)
        options = f"--preload --workers {WORKERS} --threads 4 --worker-class {worker_class}"
        # No control socket: gunicorn >= 25 shares ~/.gunicorn/gunicorn.ctl between instances.
        options += " --bind 127.0.0.1:0 --graceful-timeout 5 --no-control-socket"
        options += f" --config {READY_CONFIG}"
        gunicorn = started(stack, ["-m", "gunicorn", *options.split(), app], env(frontend))
        port = gunicorn.wait_line(r"Listening at: http://127\.0\.0\.1:(\d+)", 30, stderr=True)[1]
        workers_ready(gunicorn, WORKERS, 30)
        url = f"http://127.0.0.1:{port}{path}?sleep=0.02"
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            served = Counter(pool.map(lambda _: fetch(url), range(REQUESTS)))
        assert sum(served.values()) == REQUESTS
        if worker_class == "sync":
            assert len(served) >= 2, f"sync workers share the load: {served}"
        received.poll_until(lambda: received.per_pid(route) == served, seconds=30)
        assert received.per_pid(route) == served, f"per worker pid: {received.per_pid(route)}"
        master = gunicorn.popen.pid
        assert master not in served  # the workers, not the master, served the requests

        if broker_frozen_at_stop:
            broker.popen.send_signal(signal.SIGSTOP)
            stack.callback(broker.popen.send_signal, signal.SIGCONT)  # before it is stopped
            started_stop = time.monotonic()
            gunicorn.stop()
            seconds = time.monotonic() - started_stop
            for worker in served:
                gone(worker)
            print(f"R3 {app} {worker_class}, broker frozen: gunicorn stopped in {seconds:.2f} s")
            assert seconds < 5  # --graceful-timeout 5: no worker waited for the broker
            return
        gunicorn.stop()  # SIGTERM: a graceful stop, each worker flushes as it exits
        received.poll_until(lambda: False, seconds=1.0)
        assert received.per_pid(route) == served, "an event arrived twice"
        assert [pid for pid, *_ in received.named(loaded)] == [master]
        for worker in served:
            gone(worker)
        print(  # the figures of docs/reliability.md (pytest -s)
            f"R3 {app} {worker_class}: {REQUESTS} requests, {CONCURRENCY} at a time, served "
            f"by {len(served)} workers ({sorted(served.values())}); the same counts received "
            "per worker pid, none twice after SIGTERM; the preloaded metric once, from the master"
        )


def started(stack: contextlib.ExitStack, args: list[str], env: Mapping[str, str]) -> SiteProcess:
    """Start ``python ARGS``, to be stopped when ``stack`` closes."""
    process = SiteProcess([sys.executable, *args], env)
    stack.callback(process.stop)
    return process


def gone(pid: int, timeout: float = 10.0) -> None:
    """Fail unless process ``pid`` has exited (and been reaped) within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"worker {pid} still exists after gunicorn stopped"
        time.sleep(0.05)
