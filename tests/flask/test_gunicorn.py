"""R3 for Flask: ``Zibrato(app)`` under gunicorn ``--preload``, 4 sync and 4 gthread workers.

``gunicorn_site`` is served by a real gunicorn through a real broker subprocess; it
records a metric at import, so the process's publisher exists in the master before the
fork. Every worker's request metrics must arrive (per worker pid, from each batch's
publisher id, against the pids the responses name), none twice, within the deadlines of
``gunicorn_support``; every worker is reaped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gunicorn_support import every_workers_events_arrive_once

HERE = Path(__file__).resolve().parent


def site_env(frontend: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "ZIBRATO_PUBLISH"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["FLASK_ZIBRATO_PUBLISH"] = frontend
    return env


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("worker_class", "broker_frozen_at_stop"),
    [(kind, frozen) for frozen in (False, True) for kind in ("sync", "gthread", "gevent")],
)
def test_r3_every_gunicorn_workers_events_arrive_once(
    worker_class: str, broker_frozen_at_stop: bool
) -> None:
    """Frozen at stop: the broker is SIGSTOPped before gunicorn is, which must stop in time."""
    every_workers_events_arrive_once(
        app="gunicorn_site:app",
        env=site_env,
        worker_class=worker_class,
        path="/pid",
        route="/pid",
        loaded="flasktest.loaded",
        broker_frozen_at_stop=broker_frozen_at_stop,
    )
