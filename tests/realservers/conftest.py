"""Fixtures for the tests against the real servers (``real_servers.py``, ``server_process.py``).

* ``statsd_server``: Etsy statsd, started; ``carbon``: carbon-cache, started and
  restartable; Prometheus is started by its tests (it needs the target's address).
* ``publish(frontend, *workloads)``: one ``publish.py`` process per workload, all at once;
  returns when every one has sent everything (each bounded in time).
* ``started(backend, frontend)``: start a backend and wait until an event reaches it, so
  that publishers started afterwards lose nothing; it is stopped after the test.

Every test module here marks its tests ``realserver``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from real_servers import CarbonCache, EtsyStatsd

from zibrato import Zibrato
from zibrato.backends.base import Backend

PUBLISH = Path(__file__).with_name("publish.py")
PUBLISH_TIMEOUT = 60.0
PROBE = "zibrato_test.probe"
B = TypeVar("B", bound=Backend)


@pytest.fixture
def statsd_server(tmp_path: Path) -> Iterator[EtsyStatsd]:
    server = EtsyStatsd(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def carbon(tmp_path: Path) -> Iterator[CarbonCache]:
    server = CarbonCache(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def publish() -> Callable[..., list[dict[str, Any]]]:
    def run(frontend: str, *workloads: dict[str, Any]) -> list[dict[str, Any]]:
        processes = [
            subprocess.Popen(
                [sys.executable, str(PUBLISH), frontend, json.dumps(workload)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for workload in workloads
        ]
        reports = []
        try:
            for process in processes:
                out, err = process.communicate(timeout=PUBLISH_TIMEOUT)
                assert process.returncode == 0, f"publisher failed: {out} {err}"
                reports.append(json.loads(out))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        return reports

    return run


@pytest.fixture
def started() -> Iterator[Callable[..., Any]]:
    backends: list[Backend] = []

    def start(backend: B, frontend: str) -> B:
        backends.append(backend)
        backend.start()
        probe = Zibrato(frontend)
        try:
            deadline = time.monotonic() + 10
            while backend.received_events == 0:
                assert time.monotonic() < deadline, "no event reached the backend"
                probe.incr(PROBE)
                probe.flush(timeout=0.5)
                time.sleep(0.05)
        finally:
            probe.close()
        return backend

    yield start
    for backend in backends:
        backend.stop()
