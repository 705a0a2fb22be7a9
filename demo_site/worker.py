"""The shop's Celery app: order confirmations, on Kombu's SQLite transport (no server).

``make run`` starts its worker (prefork, two processes) beside the sites; the shop's
settings name this app in ``ZIBRATO["CELERY"]``, so every task is measured, its queries
included, in the worker and wherever it is sent from. ``python -m demo_site.worker``
creates the queue's tables (the demo's preparation does, once).
"""

from __future__ import annotations

import os

from celery import Celery
from kombu.entity import Queue

from demo_site.paths import data_dir

# The queue: one SQLite file in the demo's data folder, shared by the sites and the worker.
QUEUE_DATABASE = "tasks.sqlite3"


def broker_url() -> str:
    """Return the SQLite queue's URL (``$ZIBRATO_DEMO_DATA``/tasks.sqlite3)."""
    return f"sqla+sqlite:///{data_dir() / QUEUE_DATABASE}"


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")  # Celery's Django fixup

app = Celery("shop", broker=broker_url())
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    # A database polled for messages (every second): fanout (remote control) is not for it.
    worker_enable_remote_control=False,
)
app.autodiscover_tasks(["demo_site.shop"])


def create_queue() -> None:
    """Create the queue's tables and queue now, before several processes race to."""
    with app.connection_for_write() as connection:
        Queue(app.conf.task_default_queue).bind(connection.default_channel).declare()


if __name__ == "__main__":
    create_queue()
