"""The Celery app of the worker tests: one task per outcome, an N+1, a sleeper, and one
that spends time in every component of the breakdown.

The worker (``celery -A taskapp worker``, started by ``celery_support``) runs it as a
Django project would: with ``ZIBRATO_TEST_DJANGO=1`` this module configures Django with
``zibrato_django`` installed and ``ZIBRATO["CELERY"] = "taskapp:app"``, so its tasks are
measured through that one setting, queries included. The test process imports it without
Django, to publish (``instrument(app)`` there).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject

app = Celery("taskapp", broker=os.environ.get("TASKAPP_BROKER", "memory://"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_acks_late=False,
    worker_prefetch_multiplier=1,
)
if os.environ.get("TASKAPP_BEAT_QUEUE"):  # beat's tests: a task every 0.3 s to that queue
    app.conf.beat_schedule = {
        "add-often": {
            "task": "taskapp.add",
            "schedule": 0.3,
            "args": (1, 1),
            "options": {"queue": os.environ["TASKAPP_BEAT_QUEUE"]},
        }
    }
N_PLUS_ONE = 5  # rows the N+1 task reads one by one


@app.task(name="taskapp.add", shared=False)
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="taskapp.fail", shared=False)
def fail() -> None:
    raise ValueError("failed on purpose")


@app.task(name="taskapp.ignore", shared=False)
def ignore() -> None:
    raise Ignore()


@app.task(name="taskapp.reject", shared=False)
def reject() -> None:
    raise Reject("rejected on purpose", requeue=False)


@app.task(name="taskapp.retry_once", shared=False, bind=True, max_retries=1)
def retry_once(self: Task, countdown: float) -> str:
    if self.request.retries == 0:
        raise self.retry(countdown=countdown)
    return "second try"


@app.task(name="taskapp.n_plus_one", shared=False)
def n_plus_one(fixed: bool = False) -> int:
    """Read ``N_PLUS_ONE`` rows one query each (the same SQL each time), or in one."""
    from django.db import connection

    with connection.cursor() as cursor:
        if fixed:
            cursor.execute("SELECT %s", [N_PLUS_ONE])
            return N_PLUS_ONE
        for _ in range(N_PLUS_ONE):
            cursor.execute("SELECT %s", [1])
    return N_PLUS_ONE


@app.task(name="taskapp.where_time_goes", shared=False)
def where_time_goes(url: str) -> int:
    """Spend time in each component of the breakdown: queries, an outgoing call to ``url``
    (a loopback server that answers after a delay), the cache, a template, and its own."""
    import requests
    from django.core.cache import cache
    from django.db import connection
    from django.template import Context, Engine

    with connection.cursor() as cursor:
        for number in range(3):
            cursor.execute("SELECT %s", [number])
    status = requests.get(url, timeout=10).status_code
    cache.set("where", "cached")
    cache.get("where")
    Engine().from_string("{% for row in rows %}{{ row }},{% endfor %}").render(
        Context({"rows": range(100)})
    )
    time.sleep(APP_SECONDS)  # the task's own code
    return int(status)


APP_SECONDS = 0.05  # where_time_goes' own time, at least


@app.task(name="taskapp.sleep", shared=False)
def sleep(seconds: float, started: str | None = None) -> float:
    """Sleep; touch the file ``started`` first, so that a test knows the task runs."""
    if started:
        Path(started).touch()
    time.sleep(seconds)
    return seconds


def _configure_django() -> Any:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["zibrato_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        ZIBRATO={"CELERY": "taskapp:app", "SOURCE": os.environ["TASKAPP_SOURCE"]},
        USE_TZ=True,
    )
    django.setup()  # zibrato_django's ready() instruments this app: ZIBRATO["CELERY"]


if os.environ.get("ZIBRATO_TEST_DJANGO") == "1":
    _configure_django()
