"""Task summaries and their API: the dashboard's Tasks table and per-task charts.

Celery tasks (``docs/celery.md``) record ``celery.task.duration`` per task name, outcome,
error type and process; the table and charts are per task, so at every flush the values
of all the series of one task are pooled into one summary per metric (exact percentiles,
like the routes' in ``routes.py``), and two counters are derived: every outcome, and the
failures. The handlers of ``/api/tasks`` and ``/api/task`` read those summaries from the
history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zibrato.aggregation import Series, SeriesType
from zibrato.backends.dashboard.api import DashboardApi, Row
from zibrato.backends.dashboard.downsampling import Point, aligned, statistic
from zibrato.backends.dashboard.routes import pooled_stats
from zibrato.backends.dashboard.store import TASK, HistoryStore, StoredSeries
from zibrato.backends.toolkit.httpserver import BadRequest, Handler, Request, Response

TASK_TAG = "celery.task.name"
OUTCOME_TAG = "celery.task.outcome"
RUN = "celery.task.duration"
QUEUE = "celery.task.queue.duration"
QUERIES = "db.client.task.queries"
DUPLICATES = "db.client.task.duplicates"
DB_TIME = "db.client.task.duration"
OUTCOMES = "celery.task.outcomes"
# Derived: the outcomes that are failures, a counter.
FAILURES = "celery.task.failures"
POOLED = (RUN, QUEUE, QUERIES, DUPLICATES, DB_TIME)
DEFAULT_TABLE_WINDOW = 300.0
DEFAULT_WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One metric of one task over one flush."""

    task: str
    name: str
    type: str
    stats: dict[str, float]


def summarize_tasks(series: Iterable[Series]) -> list[TaskSummary]:
    """Return the task summaries of one rollup's series."""
    parts: dict[tuple[str, str], list[Series]] = {}
    counts: dict[tuple[str, str], float] = {}
    for one in series:
        task = one.tags.get(TASK_TAG)
        if task is None:
            continue
        if one.name == OUTCOMES and one.type == SeriesType.COUNTER:
            total_sum = one.stats.get("sum", 0.0)
            counts[(task, OUTCOMES)] = counts.get((task, OUTCOMES), 0.0) + total_sum
            if one.tags.get(OUTCOME_TAG) == "failure":
                counts[(task, FAILURES)] = counts.get((task, FAILURES), 0.0) + total_sum
        elif one.name in POOLED and one.type != SeriesType.COUNTER and one.values:
            parts.setdefault((task, one.name), []).append(one)
    summaries = [
        TaskSummary(task, name, members[0].type, pooled_stats(members))
        for (task, name), members in parts.items()
    ]
    summaries.extend(
        TaskSummary(task, name, SeriesType.COUNTER, {"sum": value})
        for (task, name), value in counts.items()
    )
    return summaries


def _summary(point: Point | None, stats: tuple[str, ...]) -> dict[str, float | None] | None:
    return None if point is None else {stat: statistic(point, stat, 0) for stat in stats}


class TaskApi:
    """``/api/tasks`` (the table) and ``/api/task`` (one task's charts).

    Spans and time axes are the dashboard API's own (``api``: a ``DashboardApi``), so the
    table and charts of tasks line up with the routes'.
    """

    def __init__(self, api: DashboardApi, store: HistoryStore) -> None:
        self.api = api
        self.store = store

    def routes(self) -> dict[str, Handler]:
        """Return the paths and handlers."""
        return {"/api/tasks": self.task_table, "/api/task": self.task_charts}

    def task_table(self, request: Request) -> Response:
        def row(task: str, merged: Mapping[str, Point | None], seconds: float) -> Row | None:
            if merged.get(RUN) is None and merged.get(OUTCOMES) is None:
                return None
            return _task_row(task, merged, seconds)

        return self.api.table(request, "tasks", self._task_series(), row)

    def task_charts(self, request: Request) -> Response:
        task = request.param("task")
        if task is None:
            raise BadRequest("name a task: /api/task?task=...")
        start, end, step, axis = self.api._axis(request, DEFAULT_WINDOW)
        members = self._task_series().get(task, {})
        points = self.store.points((s.id for s in members.values()), start, end)
        lines: dict[str, list[float | None]] = {}
        for name, stats, key in (
            (RUN, ("rate", "p50", "p95", "p99", "mean"), "run"),
            (FAILURES, ("rate",), "failures"),
            (QUEUE, ("p50", "p95", "mean"), "queue"),
            (QUERIES, ("p50", "p95", "mean", "max"), "queries"),
            (DUPLICATES, ("p95", "mean", "max"), "duplicates"),
            (DB_TIME, ("p50", "p95", "mean"), "db_time"),
        ):
            series = members.get(name)
            found = points.get(series.id, []) if series is not None else []
            for stat, values in aligned(axis, found, step, stats).items():
                lines[f"{key}.{stat}"] = values
        return Response.json(
            {"task": task, "step": step, "t": [p.ts for p in axis], "lines": lines}
        )

    def _task_series(self) -> dict[str, dict[str, StoredSeries]]:
        by_task: dict[str, dict[str, StoredSeries]] = {}
        for series in self.store.list_series(TASK):
            task = series.tags.get(TASK_TAG)
            if task is not None:
                by_task.setdefault(task, {})[series.name] = series
        return by_task


def _task_row(task: str, merged: Mapping[str, Point | None], seconds: float) -> dict[str, Any]:
    run, outcomes, failures = merged.get(RUN), merged.get(OUTCOMES), merged.get(FAILURES)
    ran = run.count or 0 if run is not None else 0
    ended = outcomes.sum or 0 if outcomes is not None else 0
    failed = failures.sum or 0 if failures is not None else 0
    return {
        "task": task,
        "tasks": ran,
        "rate": ran / seconds if seconds > 0 else None,
        "outcomes": ended,
        "failures": failed,
        "failure_ratio": failed / ended if ended else None,
        "run": _summary(run, ("p50", "p95", "p99", "mean", "max")),
        "queue": _summary(merged.get(QUEUE), ("p50", "p95", "mean", "max")),
        "queries": _summary(merged.get(QUERIES), ("p50", "p95", "mean", "max")),
        "duplicates": _summary(merged.get(DUPLICATES), ("p95", "mean", "max")),
        "db_time": _summary(merged.get(DB_TIME), ("p95", "mean")),
    }
