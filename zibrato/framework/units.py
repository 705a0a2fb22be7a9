"""One unit of work's accounting, framework-free: its state, its queries, and recording it once.

A unit of work is a request (the Django and Flask adapters) or a Celery task
(:mod:`zibrato.framework.celery`). Its front end starts it by setting :data:`current_unit`
to a new state (a :class:`RequestState`, a task's state); the hooks note what they learn on
that object (a view's start and end, an error, each query through
:meth:`UnitState.add_query`, each task published); when the unit is over, the front end
resets the variable and hands the state to its recorder (a :class:`RequestRecorder`, a
task recorder: both :class:`UnitRecorder`), which appends all the unit's values at once.

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

Where the time goes (``docs/web-metrics.md``): the hooks of each component (database,
outgoing HTTP, cache, templates) also count their time on the unit's
:class:`~zibrato.framework.breakdown.Breakdown` and note what they did on the state
(:class:`~zibrato.framework.time_spent.TimeSpentState`); the recorder hands all of it to
its :class:`~zibrato.framework.time_spent.TimeSpentRecorder`: the breakdown (each
component that took time, and ``app``), each outgoing call, a request's cache and
template time, and the repeated statements (:mod:`zibrato.framework.statements`). Which
of these a unit measures is its app's :class:`~zibrato.framework.time_spent.Switches`.

>>> state = RequestState()
>>> for _ in range(3):
...     state.add_query("shop", "SELECT * FROM item WHERE id = ?", 0.001)
>>> state.tally.queries, state.tally.duplicates
(3, 2)
"""

from __future__ import annotations

import sys
from contextvars import ContextVar

from zibrato.client import Zibrato
from zibrato.framework.breakdown import DB
from zibrato.framework.queries import QueryTally
from zibrato.framework.recording import (
    MAX_CACHED_SERIES,
    EventWriter,
    SeriesCache,
    enabled,
    recording,
)
from zibrato.framework.schema import (
    BREAKDOWN,
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
    TagCache,
    UnitTags,
)
from zibrato.framework.statements import REPEATED
from zibrato.framework.time_spent import Parts, TimeSpentRecorder, TimeSpentState
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER
from zibrato.series import Series

# The series of one unit's database metrics in one namespace: queries, time, duplicates.
DatabaseSeries = tuple[Series | EventWriter, Series | EventWriter, Series | EventWriter]
# Distinct task names one unit counts as published (names are bounded already: a cap all
# the same); past it, only the names already seen are counted.
MAX_PUBLISHED_NAMES = 100


class UnitState(TimeSpentState):
    """What any unit of work accumulates until its front end records it: its queries, the
    tasks it published, the unit it runs inside, and where its time went
    (:class:`~zibrato.framework.time_spent.TimeSpentState`).

    Class-level defaults: a unit sets only what it learns (cheaper than an ``__init__``,
    and this is made for every request and every task).
    """

    tally: QueryTally | None = None
    # The unit this one runs inside (an eager task inside a request): it counts there too.
    outer: UnitState | None = None
    # Tasks published by this unit: bounded task name -> how many (recorded at its end).
    published: dict[str, int] | None = None

    def add_query(
        self, namespace: str, statement: object, seconds: float, end: float | None = None
    ) -> None:
        """Count one query of this unit (and of the units it runs inside); a repeated one
        is located (``statements``). With ``end`` (its perf_counter() when it ended), it
        is a ``db`` part of the unit's time breakdown too."""
        if end is not None:
            found = self.breakdown
            if found is None:
                # No span has opened (most units): top-level db time, counted as
                # Breakdown.add counts it (an overlap in another thread counts once).
                start = end - seconds
                until = self.db_until
                if start >= until:
                    self.db_spent += seconds
                    self.db_until = end
                elif end > until:
                    self.db_spent += end - until
                    self.db_until = end
            else:
                found.add(DB, end - seconds, end)
        tally = self.tally
        if tally is None:
            tally = self.tally = QueryTally()
        if tally.add(namespace, statement, seconds) == REPEATED and self.switches.statements:
            self.locate(namespace, str(statement), sys._getframe(1))
        outer = self.outer
        if outer is not None:
            outer.add_query(namespace, statement, seconds, end)

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


# A kind of request as its state says it: route, method and status as the framework gives
# them, error type, whether the view raised (what TagCache.request normalizes into tags).
RequestKey = tuple[str, str, str | int | None, str | None, bool]


class RequestSeries:
    """The series one kind of request records into (None: below the client's threshold,
    or, for ``parts`` and ``app``, the breakdown switched off), and its route's tags."""

    __slots__ = ("app", "error", "parts", "request", "unit", "view")

    def __init__(
        self,
        request: Series | EventWriter | None,
        view: Series | EventWriter | None,
        error: Series | EventWriter | None,
        unit: UnitTags,
        parts: Parts | None,
    ) -> None:
        self.request = request
        self.view = view
        self.error = error
        self.unit = unit
        self.parts = parts
        self.app = None if parts is None else parts[-1]


class UnitRecorder:
    """Record whole units of work of one front end into one client: what every kind of
    unit shares, the per-unit database metrics, the tasks a unit published, and where
    its time went.

    ``level`` is the unit's metrics' level (the tasks it published are counted at it),
    ``db_level`` the per-unit database metrics'; ``database`` names those metrics (a
    request's, a task's), ``breakdown`` the unit's time breakdown (None: not recorded).
    ``namespace`` is the app's default database namespace, where a unit that ran no
    query records 0 (None: the app has no database); a front end that finds the app's
    database later sets it then. Values go into the series of the unit's cached tags
    (``zibrato.series``): a few list appends per unit.
    """

    __slots__ = (
        "_database",
        "_database_bound",
        "_duplicates",
        "_durations",
        "_level",
        "_published",
        "_queries",
        "client",
        "namespace",
        "publisher",
        "tags",
        "time_spent",
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
        breakdown: str | None = BREAKDOWN,
    ) -> None:
        self.client = client
        self.publisher = client.publisher
        self.tags = tags
        self.namespace = namespace
        # The levels this client records (None below its threshold: nothing recorded).
        self._level = enabled(client, level)
        self._database = enabled(client, db_level)
        in_database = self._database or DB_REQUEST_LEVEL
        self._queries = SeriesCache(client, in_database, DISTRIBUTION, database.queries)
        self._durations = SeriesCache(client, in_database, TIMER, database.duration)
        self._duplicates = SeriesCache(client, in_database, DISTRIBUTION, database.duplicates)
        self._database_bound: dict[tuple[UnitTags, str], DatabaseSeries] = {}
        self._published = SeriesCache(client, self._level or level, COUNTER, TASK_PUBLISHED)
        self.time_spent = TimeSpentRecorder(
            client, level=self._level, db_level=self._database, breakdown=breakdown
        )

    def _record_database(self, unit: UnitTags, tally: QueryTally | None) -> None:
        """Record the per-unit database metrics (queries, time, duplicates)."""
        if self._database is None:
            return
        if tally is None:
            if self.namespace is None:
                return
            queries, durations, duplicates = self._database_series(unit, self.namespace)
            queries.add(0)
            durations.add(0.0)
            duplicates.add(0)
            return
        bound = None
        for namespace, (count, seconds) in tally.namespaces.items():
            bound = self._database_series(unit, namespace)
            bound[0].add(count)
            bound[1].add(seconds)
        if bound is not None:
            bound[2].add(tally.duplicates)  # the unit's own series, whichever namespace

    def _database_series(self, unit: UnitTags, namespace: str) -> DatabaseSeries:
        """Return the series of ``unit``'s database metrics in ``namespace`` (found once)."""
        found = self._database_bound.get((unit, namespace))
        if found is None:
            tags = unit.database(namespace)
            found = (
                self._queries.get(tags),
                self._durations.get(tags),
                self._duplicates.get(unit.unit or None),
            )
            if len(self._database_bound) < MAX_CACHED_SERIES:
                self._database_bound[unit, namespace] = found
        return found

    def _record_published(self, unit: UnitTags, published: dict[str, int]) -> None:
        """Record ``celery.task.published`` for the tasks one unit sent, by task name."""
        if self._level is not None:
            for task, count in published.items():
                self._published.add(unit.published(task), count)

    def _record_time(
        self, unit: UnitTags, state: UnitState, seconds: float, parts: Parts | None
    ) -> None:
        """Record where a unit that noted something spent its ``seconds``: its breakdown,
        outgoing calls and repeated statements (a request's cache and templates: its
        recorder's)."""
        time_spent = self.time_spent
        if parts is not None:
            time_spent.record_breakdown(state, seconds, parts)
        if state.calls:
            time_spent.record_calls(unit, state.calls)
        if state.repeats and state.tally is not None:
            time_spent.record_repeats(unit, state.tally, state.repeats)

    def record_unit(self, tally: QueryTally) -> None:
        """Record the queries of a unit of work that is neither a request nor a task."""
        self._record_database(self.tags.route(None), tally)


class RequestRecorder(UnitRecorder):
    """Record whole requests of one app into one client, at the levels the app configured.

    >>> recorder = RequestRecorder(client, tags=TagCache(), namespace="default")  # doctest: +SKIP
    >>> recorder.record(state, "GET", 0.012)

    This runs for every request, so it records bare values into the series of the
    request's cached tags: a few list appends per request, and nothing per request for
    the publisher thread to check. ``breakdown``: the app's ``BREAKDOWN`` setting.
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
        breakdown: bool = True,
    ) -> None:
        super().__init__(
            client,
            tags=tags,
            level=request_level,
            db_level=db_level,
            namespace=namespace,
            breakdown=BREAKDOWN if breakdown else None,
        )
        self._error_level = enabled(client, EXCEPTIONS_LEVEL)
        self._bound: dict[RequestKey, RequestSeries] = {}

    def record(self, state: RequestState, method: str, seconds: float) -> None:
        """Record one request that took ``seconds``."""
        key = (state.route, method, state.status, state.error, state.view_failed)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bind(key)
        # This runs for every request: the series hand-overs (zibrato.series) of its
        # time, its view's and its breakdown's app part are written out, not called.
        series = bound.request
        if series is not None:
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
            view = state.view
            if view is not None:
                series = bound.view
                if type(series) is Series:
                    values = series.values
                    if len(values) < series.soft_cap:
                        values.append(view)
                        if len(values) == 1:
                            series.dirty.append(series)
                    else:
                        series.overflow(series, view)
                elif series is not None:
                    series.add(view)
        unit = bound.unit
        if state.tally is not None or self.namespace is not None:
            self._record_database(unit, state.tally)
        if state.published is not None:
            self._record_published(unit, state.published)
        if state.noted:
            self._record_time(unit, state, seconds, bound.parts)
            if state.cache:
                self.time_spent.record_cache(unit, state.cache)
            if state.renders:
                self.time_spent.record_renders(unit, state.renders)
        else:  # no span, call, cache or render (most requests): db and app parts only
            app = seconds
            db = state.db_spent
            if db and bound.parts is not None:
                bound.parts[DB].add(db)
                app = seconds - db if seconds > db else 0.0
            series = bound.app
            if type(series) is Series:
                values = series.values
                if len(values) < series.soft_cap:
                    values.append(app)
                    if len(values) == 1:
                        series.dirty.append(series)
                else:
                    series.overflow(series, app)
            elif series is not None:
                series.add(app)
        if bound.error is not None:
            bound.error.add(1)

    def _bind(self, key: RequestKey) -> RequestSeries:
        """Return the series of one kind of request (made once, kept while bounded)."""
        client, level, error = self.client, self._level, self._error_level
        tags = self.tags.request(*key)
        bound = RequestSeries(
            None
            if level is None
            else recording(client, level, TIMER, REQUEST_DURATION, tags.request),
            None if level is None else recording(client, level, TIMER, VIEW_DURATION, tags.view),
            None
            if tags.error is None or error is None
            else recording(client, error, COUNTER, EXCEPTIONS, tags.error),
            tags.db,
            self.time_spent.parts(tags.db),
        )
        if len(self._bound) < MAX_CACHED_SERIES:
            self._bound[key] = bound
        return bound
