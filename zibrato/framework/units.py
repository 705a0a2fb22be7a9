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

from contextvars import ContextVar

from zibrato import levels
from zibrato.client import Zibrato
from zibrato.framework.schema import (
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
from zibrato.instruments import LevelBuffer
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER, Event

# Distinct SQL texts remembered per request to spot duplicates; past this, a request that
# runs ever-new statements stops growing memory and its later duplicates go uncounted.
MAX_DISTINCT_STATEMENTS = 10_000
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


def append_all(sink: LevelBuffer, events: list[Event]) -> None:
    """Append ``events`` to one level's buffer as a client would, one length check for all."""
    queue = sink.queue
    if len(queue) + len(events) <= sink.soft_cap:
        queue.extend(events)
    else:
        for event in events:
            sink.overflow(queue, event)


class UnitRecorder:
    """Record whole units of work of one front end into one client, all at once.

    The part every kind of unit shares: the client's buffers at the unit's level and at
    the per-unit database level, and the per-unit database metrics. ``namespace`` is the
    app's default database namespace, where a unit that ran no query records 0 (None:
    the app has no database); a front end that finds the app's database later sets it
    then.
    """

    __slots__ = ("_database", "_same_level", "_unit", "client", "namespace", "publisher", "tags")

    def __init__(
        self,
        client: Zibrato,
        *,
        tags: TagCache,
        level: str,
        db_level: str = DB_REQUEST_LEVEL,
        namespace: str | None = None,
    ) -> None:
        self.client = client
        self.publisher = client.publisher
        self.tags = tags
        self.namespace = namespace
        # The client's own buffers (None below its threshold), as its timers use them.
        self._unit = client._sink(level)
        self._database = client._sink(db_level)
        self._same_level = levels.normalize(level) == levels.normalize(db_level)

    def _add_database(
        self,
        events: list[Event],
        unit: UnitTags,
        tally: QueryTally | None,
        names: DatabaseNames = REQUEST_DATABASE,
    ) -> None:
        """Add the per-unit database events to ``events`` (or to their own level's buffer)."""
        if tally is not None:
            database = database_events(tally, unit, names)
        elif self.namespace is not None:
            database = zero_events(unit, self.namespace, names)
        else:
            return
        if self._same_level:
            events += database
        elif self._database is not None:
            append_all(self._database, database)

    def record_unit(self, tally: QueryTally) -> None:
        """Record the queries of a unit of work that is neither a request nor a task."""
        if self._database is not None:
            append_all(self._database, database_events(tally, self.tags.route(None)))


class RequestRecorder(UnitRecorder):
    """Record whole requests of one app into one client, at the levels the app configured.

    >>> recorder = RequestRecorder(client, tags=TagCache(), namespace="default")  # doctest: +SKIP
    >>> recorder.record(state, "GET", 0.012)

    This runs for every request, so it skips the client's per-call checks and appends the
    request's events in the client's own shape, all at once: the timers, the error's
    counter, the per-request database metrics, the tasks it published.
    """

    __slots__ = ("_error",)

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
        self._error = client._sink(EXCEPTIONS_LEVEL)

    def record(self, state: RequestState, method: str, seconds: float) -> None:
        """Record one request that took ``seconds``."""
        tags = self.tags.request(state.route, method, state.status, state.error, state.view_failed)
        view = state.view
        if view is None:
            events: list[Event] = [(TIMER, REQUEST_DURATION, seconds, None, tags.request)]
        else:
            events = [
                (TIMER, REQUEST_DURATION, seconds, None, tags.request),
                (TIMER, VIEW_DURATION, view, None, tags.view),
            ]
        if state.tally is not None or self.namespace is not None:
            self._add_database(events, tags.db, state.tally)
        if state.published is not None:
            events += published_events(state.published, tags.db)
        sink = self._unit
        if sink is not None:
            # append_all(), written out: this runs for every request.
            queue = sink.queue
            if len(queue) + len(events) <= sink.soft_cap:
                queue.extend(events)
            else:
                for event in events:
                    sink.overflow(queue, event)
        if tags.error is not None and self._error is not None:
            append_all(self._error, [(COUNTER, EXCEPTIONS, 1, None, tags.error)])


def database_events(
    tally: QueryTally, unit: UnitTags, names: DatabaseNames = REQUEST_DATABASE
) -> list[Event]:
    """Return the per-unit database events of ``tally`` (queries, time, duplicates)."""
    events: list[Event] = []
    for namespace, (queries, seconds) in tally.namespaces.items():
        tags = unit.database(namespace)
        events.append((DISTRIBUTION, names.queries, queries, None, tags))
        events.append((TIMER, names.duration, seconds, None, tags))
    events.append((DISTRIBUTION, names.duplicates, tally.duplicates, None, unit.unit))
    return events


def zero_events(
    unit: UnitTags, namespace: str, names: DatabaseNames = REQUEST_DATABASE
) -> list[Event]:
    """Return the per-unit database events of a unit that ran no query."""
    tags = unit.database(namespace)
    return [
        (DISTRIBUTION, names.queries, 0, None, tags),
        (TIMER, names.duration, 0.0, None, tags),
        (DISTRIBUTION, names.duplicates, 0, None, unit.unit),
    ]


def published_events(published: dict[str, int], unit: UnitTags) -> list[Event]:
    """Return the ``celery.task.published`` counters of the tasks one unit published."""
    return [
        (COUNTER, TASK_PUBLISHED, count, None, unit.published(task))
        for task, count in published.items()
    ]
