"""R3 (issue 9): gunicorn ``--preload`` with 4 sync, 4 gthread and 4 gevent workers.

The test site is served by a real gunicorn through a real broker subprocess. The app's
own code records a metric at import (``djtest/wsgi.py``), so under ``--preload`` the
client exists in the master before it forks. Every worker's request metrics must arrive
(counted per worker pid, from each batch's publisher id, against the pids the responses
name), none twice; every worker is reaped (``gunicorn_support``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django_support import site_env
from gunicorn_support import every_workers_events_arrive_once


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("worker_class", "broker_frozen_at_stop"),
    [("sync", False), ("gthread", False), ("gevent", False), ("sync", True), ("gevent", True)],
)
def test_r3_every_gunicorn_workers_events_arrive_once(
    tmp_path: Path, worker_class: str, broker_frozen_at_stop: bool
) -> None:
    """Frozen at stop: the broker is SIGSTOPped before gunicorn is, which must stop in time."""
    every_workers_events_arrive_once(
        app="djtest.wsgi:application",
        env=lambda frontend: site_env(
            DJTEST_PUBLISH=frontend, DJTEST_DB=str(tmp_path / "db.sqlite3")
        ),
        worker_class=worker_class,
        path="/pid/",
        route="pid/",
        loaded="djtest.loaded",
        broker_frozen_at_stop=broker_frozen_at_stop,
    )
