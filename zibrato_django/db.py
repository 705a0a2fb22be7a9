"""Database metrics through Django's documented ``execute_wrapper`` hook: nothing swapped.

Every connection of every alias gets one :func:`measure_query` wrapper when it connects
(``connection_created``), and connections that already exist when the app becomes ready
get it then. Each query is timed; inside a request or a Celery task (the unit
of work of :mod:`zibrato.framework.units`) it is also added to that unit's tally, from which
the middleware records ``db.client.request.*`` (the task's recorder ``db.client.task.*``)
once at the end, and it is a ``db`` part of the unit's time breakdown (a statement that
repeats in a request is located there too: :mod:`zibrato.framework.statements`). Outside any
(management commands, tests that query directly) a query records
``db.client.operation.duration`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from zibrato.framework import schema
from zibrato.framework.operations import OperationRecorder
from zibrato.framework.units import current_unit
from zibrato_django import failures, zibrato

# Each query's own timer, by alias and operation, shared by every connection.
_operations = OperationRecorder(schema.TagCache())


def measure_query(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Time one query (``executemany`` counts as one) and add it to the current request."""
    start = perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        end = perf_counter()
        elapsed = end - start
        try:
            alias = context["connection"].alias
            state = current_unit.get()
            if state is not None:
                state.add_query(alias, sql, elapsed, end)
            _operations.record(zibrato, alias, sql, elapsed)
        except Exception as exc:
            failures.report("django_db_hook", exc)


def install(connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Add :func:`measure_query` to ``connection`` once (a ``connection_created`` receiver)."""
    # The list that connection.execute_wrapper() manages, kept for the connection's life.
    if measure_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(measure_query)


def install_on_existing() -> None:
    """Add the wrapper to the connections this thread has already set up."""
    for connection in connections.all(initialized_only=True):
        install(connection)
