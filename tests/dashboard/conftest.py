"""Fixtures for the dashboard tests (helpers are in ``dashboard_support.py``).

* ``browser``, ``browser_page``: a real headless Chromium (``tests/browser_support.py``).
* ``make_dashboard(**options)``: a started :class:`DashboardBackend` on a random loopback
  port with its history in ``tmp_path``; stopped after the test.
* ``site``: a real in-process broker, a dashboard flushing every 0.5 s that receives from
  it, and a ``Zibrato`` client publishing to it (a :class:`LiveSite`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backends.backend_support import wait_subscribed
from browser_support import browser, browser_page  # noqa: F401  (fixtures)
from dashboard_support import LiveSite

from zibrato import Zibrato
from zibrato.backends.dashboard import DashboardBackend
from zibrato.broker import Broker


@pytest.fixture
def make_dashboard(tmp_path: Path) -> Iterator[Callable[..., DashboardBackend]]:
    made: list[DashboardBackend] = []

    def make(**options: Any) -> DashboardBackend:
        settings: dict[str, Any] = {
            "connect": "inproc://zibrato-dashboard-test-unused",
            "listen": "127.0.0.1:0",
            "path": str(tmp_path / "history.sqlite3"),
            "flush_interval": 60.0,
            **options,
        }
        backend = DashboardBackend(**settings)
        made.append(backend)
        backend.start()
        return backend

    yield make
    for backend in made:
        backend.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LiveSite]:
    broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
    frontend, backend_address = broker.start()
    dashboard = DashboardBackend(
        connect=backend_address,
        listen="127.0.0.1:0",
        path=str(tmp_path / "history.sqlite3"),
        flush_interval=0.5,
    )
    client = None
    try:
        dashboard.start()
        # Events published before the broker knows the dashboard's subscription are lost.
        wait_subscribed(frontend, topics=(b"debug", b"info", b"warning", b"error", b"crit"))
        client = Zibrato(frontend, source="web-1")
        yield LiveSite(dashboard, client, frontend)
    finally:
        if client is not None:
            client.close()
        dashboard.stop()
        broker.stop()
