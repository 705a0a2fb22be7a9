"""The Tasks table and one task's charts: a task's series pooled across outcomes, errors and
processes, failures counted from the outcomes (those of tasks that never ran included),
over real HTTP."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from dashboard_support import emit, get_json

from zibrato.backends.dashboard import DashboardBackend
from zibrato.backends.dashboard.tasks import FAILURES, OUTCOMES, QUEUE, RUN, summarize_tasks

NOW = time.time()
TASK = "celery.task.name"


def task_events(
    name: str,
    seconds: float,
    *,
    outcome: str = "success",
    error: str | None = None,
    waited: float | None = 0.01,
    queries: int = 0,
    duplicates: int = 0,
) -> list[tuple[int, str, Any, None, dict[str, str]]]:
    """The raw events one task leaves (0: counter, 3: timer, 4: distribution)."""
    tags = {TASK: name, "celery.task.outcome": outcome}
    if error is not None:
        tags["error.type"] = error
    events: list[tuple[int, str, Any, None, dict[str, str]]] = [
        (3, RUN, seconds, None, tags),
        (0, OUTCOMES, 1, None, tags),
        (4, "db.client.task.queries", queries, None, {TASK: name, "db.namespace": "default"}),
        (4, "db.client.task.duplicates", duplicates, None, {TASK: name}),
    ]
    if waited is not None:
        events.append((3, QUEUE, waited, None, {TASK: name}))
    return events


@pytest.fixture
def worker(make_dashboard: Callable[..., DashboardBackend]) -> DashboardBackend:
    """Three flushes of 10 s: shop.confirm (an N+1, one failure in ten), shop.report (slow),
    and a revoked shop.report that never ran."""
    backend = make_dashboard(flush_interval=10.0)
    for ts in (NOW - 20, NOW - 10, NOW):
        events = []
        for i in range(10):
            events += task_events(
                "shop.confirm",
                0.02 + i / 1000,
                outcome="failure" if i == 0 else "success",
                error="SMTPError" if i == 0 else None,
                waited=0.05 * i,
                queries=11,
                duplicates=9,
            )
        events += task_events("shop.report", 2.0, queries=1)
        events.append(
            (0, OUTCOMES, 1, None, {TASK: "shop.report", "celery.task.outcome": "revoked"})
        )
        emit(backend, ts, 10.0, events)
    return backend


def test_the_tasks_table(worker: DashboardBackend) -> None:
    answer = get_json(worker, "/api/tasks", window=300, end=NOW)
    rows = {row["task"]: row for row in answer["tasks"]}
    assert set(rows) == {"shop.confirm", "shop.report"}
    confirm = rows["shop.confirm"]
    assert confirm["tasks"] == 30 and confirm["failures"] == 3
    assert confirm["failure_ratio"] == pytest.approx(0.1)
    assert confirm["rate"] == pytest.approx(30 / answer["seconds"])
    assert confirm["run"]["p50"] == pytest.approx(
        statistics.median([0.02 + i / 1000 for i in range(10)])
    )
    assert confirm["queue"]["p95"] == pytest.approx(0.4275, rel=1e-3)  # exact, over 30 waits
    assert confirm["queries"]["p95"] == 11 and confirm["duplicates"]["mean"] == 9
    report = rows["shop.report"]
    assert report["tasks"] == 3 and report["outcomes"] == 6 and report["failures"] == 0
    assert report["run"]["p99"] == pytest.approx(2.0)


def test_one_tasks_charts(worker: DashboardBackend) -> None:
    answer = get_json(worker, "/api/task", task="shop.confirm", window=300, end=NOW)
    lines = answer["lines"]
    assert len(answer["t"]) == 3
    assert lines["run.rate"] == pytest.approx([1.0, 1.0, 1.0])
    assert lines["failures.rate"] == pytest.approx([0.1, 0.1, 0.1])
    assert lines["duplicates.mean"] == [9, 9, 9]
    assert all(value is not None for value in lines["queue.p95"])
    unknown = get_json(worker, "/api/task", task="no.such.task", window=300, end=NOW)
    assert unknown["lines"]["run.rate"] == [0, 0, 0]


def test_a_task_chart_needs_a_task(worker: DashboardBackend) -> None:
    import requests

    with requests.get(worker.url + "api/task", timeout=10) as response:
        assert response.status_code == 400 and "name a task" in response.text


def test_series_without_a_task_name_are_not_tasks() -> None:
    from zibrato.aggregation import Aggregator

    aggregator = Aggregator()
    aggregator.add_events(
        [(3, RUN, 0.1, None, {}), (0, OUTCOMES, 1, None, {"celery.task.outcome": "failure"})]
    )
    assert summarize_tasks(aggregator.rollup(now=NOW, interval=10).series) == []
    assert FAILURES not in {s.name for s in summarize_tasks([])}
