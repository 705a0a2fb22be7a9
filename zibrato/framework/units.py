"""One unit of work's accounting, framework-free: its state, its queries, and recording it once.

A unit of work is a request (the Django and Flask adapters) or a Celery task
(:mod:`zibrato.framework.celery`). Its front end starts it by setting :data:`current_unit`
to a new state (a :class:`RequestState`, a task's state); the hooks note what they learn on
that object (a view's start and end, an error, each query through
:meth:`UnitState.add_query`, each task published); when the unit is over, the front end
resets the variable and hands the state to its recorder (a :class:`RequestRecorder`, a
task recorder: both :class:`UnitRecorder`), which appends all the unit's events at once.

The state lives in a ``contextvars.ContextVar``, not a thread-local: it follows the
request into async views and into ``sync_to_async`` / ``async_to_sync`` calls, which copy
the context, and since the copy holds the same object, a query made on another thread
still lands in its unit's tally. A thread the application starts itself does not carry
the context: its queries count as outside a unit. A unit started inside another (a Celery
task run eagerly inside a request) keeps the outer one as :attr:`UnitState.outer`: its
queries count toward both.

The per-unit database rule (``docs/web-metrics.md``): once an app has a database, every
measured unit records its queries and DB time per namespace it used, and its duplicates;
a unit that used none records 0 for the app's default namespace, so that queries-per-unit
percentiles count the units that ran none.

>>> state = RequestState()
>>> for _ in range(3):
...     state.add_query("shop", "SELECT * FROM item WHERE id = ?", 0.001)
>>> state.tally.queries, state.tally.duplicates
(3, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from zibrato import levels
from zibrato.client import Zibrato
from zibrato.framework.schema import (
    DB_OPERATION_DURATION,
    DB_OPERATION_LEVEL,
    DB_REQUEST_LEVEL,
    EXCEPTIONS,
    EXCEPTIONS_LEVEL,
    REQUEST_DATABASE,
    REQUEST_DURATION,
    REQUEST_LEVEL,
    TASK_PUBLISHED,
    UNMATCHED_ROUTE,
    VIEW_DURATION,
    DatabaseNames,
    RequestTags,
    TagCache,
    UnitTags,
)
from zibrato.instruments import LevelBuffer, append_event
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER
from zibrato.series import Series

# Distinct SQL texts remembered per request to spot duplicates; past this, a request that
# runs ever-new statements stops growing memory and its later duplicates go uncounted.
MAX_DISTINCT_STATEMENTS = 10_000
# Tag objects whose series a recorder or a SeriesCache remembers (the TagCache's are bounded
# too); past this, a series is found by its tags' content (slower, same result).
MAX_CACHED_SERIES = 10_000
# Distinct task names one unit counts as published (names are bounded already: a cap all
# the same); past it, only the names already seen are counted.
MAX_PUBLISHED_NAMES = 100


class QueryTally:
    """Count the queries of one unit of work (a request, a command): per namespace, and
    how many repeated a SQL text already run in that unit (the N+1 signal).

    A statement that is not a ``str`` (a driver's composed SQL object) is counted but
    never taken for a duplicate.
    """

    __slots__ = ("_seen", "duplicates", "namespaces", "queries")

    def __init__(self) -> None:
        self.queries = 0
        self.duplicates = 0
        # namespace -> [queries, seconds]
        self.namespaces: dict[str, list[float]] = {}
        self._seen: set[tuple[str, str]] = set()

    def add(self, namespace: str, statement: object, seconds: float) -> None:
        """Count one query of ``namespace`` that took ``seconds``."""
        self.queries += 1
        totals = self.namespaces.get(namespace)
        if totals is None:
            self.namespaces[namespace] = [1, seconds]
        else:
            totals[0] += 1
            totals[1] += seconds
        if type(statement) is not str:
            return
        key = (namespace, statement)
        if key in self._seen:
            self.duplicates += 1
        elif len(self._seen) < MAX_DISTINCT_STATEMENTS:
            self._seen.add(key)


class UnitState:
    """What any unit of work accumulates until its front end records it: its queries, the
    tasks it published, and the unit it runs inside.

    Class-level defaults: a unit sets only what it learns (cheaper than an ``__init__``,
    and this is made for every request and every task).
    """

    tally: QueryTally | None = None
    # The unit this one runs inside (an eager task inside a request): it counts there too.
    outer: UnitState | None = None
    # Tasks published by this unit: bounded task name -> how many (recorded at its end).
    published: dict[str, int] | None = None

    def add_query(self, namespace: str, statement: object, seconds: float) -> None:
        """Count one query of this unit (and of the units it runs inside)."""
        tally = self.tally
        if tally is None:
            tally = self.tally = QueryTally()
        tally.add(namespace, statement, seconds)
        outer = self.outer
        if outer is not None:
            outer.add_query(namespace, statement, seconds)

    def note_published(self, task: str) -> None:
        """Count one task published by this unit (``task``: its bounded name)."""
        published = self.published
        if published is None:
            self.published = {task: 1}
        elif task in published or len(published) < MAX_PUBLISHED_NAMES:
            published[task] = published.get(task, 0) + 1


class RequestState(UnitState):
    """What one request accumulates until its adapter records it."""

    route: str = UNMATCHED_ROUTE
    # The status as the framework gives it ("200 OK" or 200); None: no response was made.
    status: str | int | None = None
    # The view's time in seconds (None: no view ran); an adapter that learns when the view
    # started before it learns when it ended keeps the start (perf_counter()) meanwhile.
    view: float | None = None
    view_start: float | None = None
    error: str | None = None
    view_failed = False

    def note_error(self, error: str, *, in_view: bool) -> None:
        """Note the request's error (the first one noted wins)."""
        if self.error is None:
            self.error = error
            self.view_failed = in_view


# The unit of work being measured in this context: a request (None on excluded paths),
# a task; None outside any.
current_unit: ContextVar[UnitState | None] = ContextVar("zibrato_unit", default=None)


class SeriesCache:
    """One metric's series (``zibrato.series``) per tags object, for one publisher.

    The tag dictionaries of the framework kit are made once per combination and kept
    (``TagCache``): a series found by the object's identity costs one lookup, where
    finding it by the tags' content would hash them on every request.

    >>> cache = SeriesCache(client, "debug", TIMER, "db.operation")  # doctest: +SKIP
    >>> cache.get(tags).add(0.002)

    When the publisher makes no series for some tags (too many series, or tags a batch
    may not carry), values are recorded as events instead, where the publisher counts
    what is invalid: :class:`EventWriter`.
    """

    __slots__ = ("_by_id", "client", "kind", "level", "name")

    def __init__(self, client: Zibrato, level: str, kind: int, name: str) -> None:
        self.client = client
        self.level = levels.normalize(level)
        self.kind = kind
        self.name = name
        self._by_id: dict[int, tuple[Mapping[str, str] | None, Series | EventWriter]] = {}

    def add(self, tags: Mapping[str, str] | None, value: float) -> None:
        """Record ``value`` into the series of ``tags``."""
        found = self._by_id.get(id(tags))
        if found is not None and found[0] is tags:
            found[1].add(value)
        else:
            self.get(tags).add(value)

    def get(self, tags: Mapping[str, str] | None) -> Series | EventWriter:
        """Return where to record values with ``tags``: their series, or events."""
        found = self._by_id.get(id(tags))
        if found is not None and found[0] is tags:
            return found[1]
        series = recording(self.client, self.level, self.kind, self.name, tags)
        if len(self._by_id) < MAX_CACHED_SERIES:
            self._by_id[id(tags)] = (tags, series)  # holds ``tags``: its id stays its own
        return series


class EventWriter:
    """Record values of one series as events (what :func:`recording` gives when the
    publisher makes no series): the slower path, which the publisher checks."""

    __slots__ = ("kind", "name", "sink", "tags")

    def __init__(
        self, sink: LevelBuffer, kind: int, name: str, tags: Mapping[str, str] | None
    ) -> None:
        self.sink = sink
        self.kind = kind
        self.name = name
        self.tags = tags

    def add(self, value: Any) -> None:
        append_event(self.sink, (self.kind, self.name, value, None, self.tags))


def recording(
    client: Zibrato, level: str, kind: int, name: str, tags: Mapping[str, str] | None
) -> Series | EventWriter:
    """Return where the kit records values of one series at an enabled ``level``."""
    series = client.publisher.series(level, kind, name, tags=tags, trusted=True)
    if series is not None:
        return series
    sink = client._sink(level)
    assert sink is not None  # the kit asks only for levels the client records
    return EventWriter(sink, kind, name, tags)


class RequestSeries:
    """The series one kind of request records into (None: below the client's threshold)."""

    __slots__ = ("error", "request", "view")

    def __init__(
        self,
        request: Series | EventWriter | None,
        view: Series | EventWriter | None,
        error: Series | EventWriter | None,
    ) -> None:
        self.request = request
        self.view = view
        self.error = error


class UnitRecorder:
    """Record whole units of work of one front end into one client: what every kind of
    unit shares, the per-unit database metrics and the tasks a unit published.

    ``level`` is the unit's metrics' level (the tasks it published are counted at it),
    ``db_level`` the per-unit database metrics'; ``database`` names those metrics (a
    request's, a task's). ``namespace`` is the app's default database namespace, where a
    unit that ran no query records 0 (None: the app has no database); a front end that
    finds the app's database later sets it then. Values go into the series of the
    unit's cached tags (``zibrato.series``): a few list appends per unit.
    """

    __slots__ = (
        "_database",
        "_duplicates",
        "_durations",
        "_level",
        "_published",
        "_queries",
        "client",
        "namespace",
        "publisher",
        "tags",
    )

    def __init__(
        self,
        client: Zibrato,
        *,
        tags: TagCache,
        level: str,
        db_level: str = DB_REQUEST_LEVEL,
        namespace: str | None = None,
        database: DatabaseNames = REQUEST_DATABASE,
    ) -> None:
        self.client = client
        self.publisher = client.publisher
        self.tags = tags
        self.namespace = namespace
        # The levels this client records (None below its threshold: nothing recorded).
        self._level = _enabled(client, level)
        self._database = _enabled(client, db_level)
        in_database = self._database or DB_REQUEST_LEVEL
        self._queries = SeriesCache(client, in_database, DISTRIBUTION, database.queries)
        self._durations = SeriesCache(client, in_database, TIMER, database.duration)
        self._duplicates = SeriesCache(client, in_database, DISTRIBUTION, database.duplicates)
        self._published = SeriesCache(client, self._level or level, COUNTER, TASK_PUBLISHED)

    def _record_database(self, unit: UnitTags, tally: QueryTally | None) -> None:
        """Record the per-unit database metrics (queries, time, duplicates)."""
        if self._database is None:
            return
        if tally is None:
            if self.namespace is None:
                return
            tags = unit.database(self.namespace)
            self._queries.add(tags, 0)
            self._durations.add(tags, 0.0)
            self._duplicates.add(unit.unit or None, 0)
            return
        for namespace, (queries, seconds) in tally.namespaces.items():
            tags = unit.database(namespace)
            self._queries.add(tags, queries)
            self._durations.add(tags, seconds)
        self._duplicates.add(unit.unit or None, tally.duplicates)

    def _record_published(self, unit: UnitTags, published: dict[str, int]) -> None:
        """Record ``celery.task.published`` for the tasks one unit sent, by task name."""
        if self._level is not None:
            for task, count in published.items():
                self._published.add(unit.published(task), count)

    def record_unit(self, tally: QueryTally) -> None:
        """Record the queries of a unit of work that is neither a request nor a task."""
        self._record_database(self.tags.route(None), tally)


class RequestRecorder(UnitRecorder):
    """Record whole requests of one app into one client, at the levels the app configured.

    >>> recorder = RequestRecorder(client, tags=TagCache(), namespace="default")  # doctest: +SKIP
    >>> recorder.record(state, "GET", 0.012)

    This runs for every request, so it records bare values into the series of the
    request's cached tags: a few list appends per request, and nothing per request for
    the publisher thread to check.
    """

    __slots__ = ("_bound", "_error_level")

    def __init__(
        self,
        client: Zibrato,
        *,
        tags: TagCache,
        request_level: str = REQUEST_LEVEL,
        db_level: str = DB_REQUEST_LEVEL,
        namespace: str | None = None,
    ) -> None:
        super().__init__(
            client, tags=tags, level=request_level, db_level=db_level, namespace=namespace
        )
        self._error_level = _enabled(client, EXCEPTIONS_LEVEL)
        self._bound: dict[RequestTags, RequestSeries] = {}

    def record(self, state: RequestState, method: str, seconds: float) -> None:
        """Record one request that took ``seconds``."""
        tags = self.tags.request(state.route, method, state.status, state.error, state.view_failed)
        bound = self._bound.get(tags)
        if bound is None:
            bound = self._bind(tags)
        series = bound.request
        if series is not None:
            if type(series) is Series:
                # The series hand-over, written out for speed (see zibrato.series).
                values = series.values
                if len(values) < series.soft_cap:
                    values.append(seconds)
                    if len(values) == 1:
                        series.dirty.append(series)
                else:
                    series.overflow(series, seconds)
            else:
                series.add(seconds)
            if state.view is not None and bound.view is not None:
                bound.view.add(state.view)
        if state.tally is not None or self.namespace is not None:
            self._record_database(tags.db, state.tally)
        if state.published is not None:
            self._record_published(tags.db, state.published)
        if bound.error is not None:
            bound.error.add(1)

    def _bind(self, tags: RequestTags) -> RequestSeries:
        """Return the series of one kind of request (made once, kept while bounded)."""
        client, level, error = self.client, self._level, self._error_level
        bound = RequestSeries(
            None
            if level is None
            else recording(client, level, TIMER, REQUEST_DURATION, tags.request),
            None if level is None else recording(client, level, TIMER, VIEW_DURATION, tags.view),
            None
            if tags.error is None or error is None
            else recording(client, error, COUNTER, EXCEPTIONS, tags.error),
        )
        if len(self._bound) < MAX_CACHED_SERIES:
            self._bound[tags] = bound
        return bound


def _enabled(client: Zibrato, level: str) -> str | None:
    """Return ``level``'s canonical name if ``client`` records it, else None."""
    return levels.normalize(level) if client._sink(level) is not None else None


class OperationRecorder:
    """Record each query's own duration (``db.client.operation.duration``, level debug)
    into the series of its namespace and operation, for whichever client is current.

    >>> operations = OperationRecorder(TagCache())              # doctest: +SKIP
    >>> operations.record(client, "default", "SELECT 1", 0.0004)
    """

    __slots__ = ("_cache", "_publisher", "tags")

    def __init__(self, tags: TagCache) -> None:
        self.tags = tags
        self._publisher: object = None
        self._cache: SeriesCache | None = None  # None: the client does not record the level

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
        if self._cache is not None:
            self._cache.add(self.tags.operation(namespace, statement), seconds)
