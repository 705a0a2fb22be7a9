"""Database metrics through Django's documented ``execute_wrapper`` hook: nothing swapped.

Every connection of every alias gets one :func:`measure_query` wrapper when it connects
(``connection_created``), and connections that already exist when the app becomes ready
get it then. Each query is timed; inside a request (see :mod:`zibrato_django.request_state`)
it is also added to that request's per-alias tally, from which the middleware records
``db.client.request.*`` once at the end. Outside a request (management commands, workers,
tests that query directly) a query records ``db.client.operation.duration`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from zibrato_django import failures, zibrato
from zibrato_django.request_state import current_request

OPERATION_METRIC = "db.client.operation.duration"
OPERATION_LEVEL = "debug"
OTHER_OPERATION = "OTHER"
# The first word of a statement, as db.operation.name; anything else is OTHER, so the
# tag's values stay bounded whatever SQL an application runs.
OPERATIONS = frozenset(
    [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "MERGE",
        "REPLACE",
        "UPSERT",
        "CREATE",
        "ALTER",
        "DROP",
        "TRUNCATE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
        "PRAGMA",
        "SET",
        "SHOW",
        "EXPLAIN",
        "ANALYZE",
        "VACUUM",
        "LOCK",
        "GRANT",
        "REVOKE",
        "CALL",
        "COPY",
        "DECLARE",
        "FETCH",
        "CLOSE",
    ]
)

# Tags per (alias, operation), built once: events keep a reference to their tags.
_operation_tags: dict[tuple[str, str], dict[str, str]] = {}
# The same tags per alias and statement text: an application runs few distinct statements
# many times, so the usual query costs two dict lookups here. Bounded: cleared when full.
_tags_by_statement: dict[str, dict[object, dict[str, str]]] = {}
MAX_CACHED_STATEMENTS = 4096


def operation_name(sql: object) -> str:
    """Return the statement's operation (``SELECT``...), or ``OTHER``."""
    if not isinstance(sql, str):
        return OTHER_OPERATION
    head = sql[:32].lstrip(" \t\r\n(").split(None, 1)
    word = head[0].upper() if head else ""
    return word if word in OPERATIONS else OTHER_OPERATION


def operation_tags(alias: str, operation: str) -> dict[str, str]:
    """Return the (shared, never mutated) tags of one alias and operation."""
    key = (alias, operation)
    tags = _operation_tags.get(key)
    if tags is None:
        tags = {"db.namespace": alias, "db.operation.name": operation}
        if len(_operation_tags) < 1024:
            _operation_tags[key] = tags
    return tags


def measure_query(
    execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    """Time one query (``executemany`` counts as one) and add it to the current request."""
    start = perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        elapsed = perf_counter() - start
        try:
            alias = context["connection"].alias
            state = current_request.get()
            if state is not None:
                state.add_query(alias, sql, elapsed)
            zibrato.timing(OPERATION_METRIC, elapsed, level=OPERATION_LEVEL, tags=_tags(alias, sql))
        except Exception as exc:
            failures.report("django_db_hook", exc)


def _tags(alias: str, sql: object) -> dict[str, str]:
    """Return :func:`operation_tags` for one statement, cached by its text."""
    by_statement = _tags_by_statement.get(alias)
    if by_statement is None:
        by_statement = _tags_by_statement[alias] = {}
    try:
        tags = by_statement.get(sql)
    except TypeError:  # an unhashable statement object
        return operation_tags(alias, operation_name(sql))
    if tags is None:
        tags = operation_tags(alias, operation_name(sql))
        if len(by_statement) >= MAX_CACHED_STATEMENTS:
            by_statement.clear()
        by_statement[sql] = tags
    return tags


def install(connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """Add :func:`measure_query` to ``connection`` once (a ``connection_created`` receiver)."""
    # The list that connection.execute_wrapper() manages, kept for the connection's life.
    if measure_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(measure_query)


def install_on_existing() -> None:
    """Add the wrapper to the connections this thread has already set up."""
    for connection in connections.all(initialized_only=True):
        install(connection)
