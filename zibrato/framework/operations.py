"""Each query's own duration, ``db.client.operation.duration``: recorded as it ends.

The adapters' database hooks (Django's ``execute_wrapper``, SQLAlchemy's cursor events)
call :meth:`OperationRecorder.record` for every query, inside a unit of work or not; the
per-unit metrics are :mod:`zibrato.framework.units`'.
"""

from __future__ import annotations

from zibrato.client import Zibrato
from zibrato.framework.recording import EventWriter, SeriesCache
from zibrato.framework.schema import (
    DB_OPERATION_DURATION,
    DB_OPERATION_LEVEL,
    MAX_CACHED_STATEMENTS,
    TagCache,
)
from zibrato.protocol import TIMER
from zibrato.series import Series


class OperationRecorder:
    """Record each query's own duration (``db.client.operation.duration``, level debug)
    into the series of its namespace and operation, for whichever client is current.

    >>> operations = OperationRecorder(TagCache())              # doctest: +SKIP
    >>> operations.record(client, "default", "SELECT 1", 0.0004)

    This runs for every query: the series is found by the SQL text (its operation's tags
    read once per text, as ``TagCache.operation`` caches them) and the value handed over
    written out.
    """

    __slots__ = ("_by_statement", "_cache", "_publisher", "tags")

    def __init__(self, tags: TagCache) -> None:
        self.tags = tags
        self._publisher: object = None
        self._cache: SeriesCache | None = None  # None: the client does not record the level
        # namespace -> SQL text -> its series (at most MAX_CACHED_STATEMENTS texts each)
        self._by_statement: dict[str, dict[object, Series | EventWriter]] = {}

    def record(self, client: Zibrato, namespace: str, statement: object, seconds: float) -> None:
        """Record one query of ``namespace`` that took ``seconds``."""
        if client.publisher is not self._publisher:  # the first query, or another client
            self._publisher = client.publisher
            enabled = client._sink(DB_OPERATION_LEVEL) is not None
            self._cache = (
                SeriesCache(client, DB_OPERATION_LEVEL, TIMER, DB_OPERATION_DURATION)
                if enabled
                else None
            )
            self._by_statement = {}
        if self._cache is None:
            return
        by_statement = self._by_statement.get(namespace)
        try:
            series = by_statement[statement]  # type: ignore[index]
        except (KeyError, TypeError):  # a new text or namespace, or an unhashable statement
            series = self._find(namespace, statement)
        if type(series) is Series:
            values = series.values
            if len(values) < series.soft_cap:
                values.append(seconds)
                if len(values) == 1:
                    series.dirty.append(series)
            else:
                series.overflow(series, seconds)
        else:
            series.add(seconds)

    def _find(self, namespace: str, statement: object) -> Series | EventWriter:
        """Return the series of ``statement``'s operation, remembered by its text."""
        assert self._cache is not None
        series = self._cache.get(self.tags.operation(namespace, statement))
        by_statement = self._by_statement.setdefault(namespace, {})
        try:
            if len(by_statement) >= MAX_CACHED_STATEMENTS:
                by_statement.clear()  # as TagCache does: the hot texts come back
            by_statement[statement] = series
        except TypeError:  # an unhashable statement object: found the slow way each time
            pass
        return series
