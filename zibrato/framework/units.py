"""One request's accounting, framework-free: its state, its queries, and recording it once.

An adapter starts a request by setting :data:`current_request` to a new
:class:`RequestState`; its hooks note what they learn on that object (the view's start
and end, an error, each query through :meth:`RequestState.add_query`); when the request
is over, the adapter resets the variable and hands the state to a
:class:`RequestRecorder`, which appends all the request's events at once.

The state lives in a ``contextvars.ContextVar``, not a thread-local: it follows the
request into async views and into ``sync_to_async`` / ``async_to_sync`` calls, which copy
the context, and since the copy holds the same object, a query made on another thread
still lands in its request's tally. A thread the application starts itself does not
carry the context: its queries count as outside a request.

The per-request database rule (``docs/web-metrics.md``): once an app has a database,
every measured request records its queries and DB time per namespace it used, and its
duplicates; a request that used none records 0 for the app's default namespace, so that
queries-per-request percentiles count the requests that ran none.

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
    DB_REQUEST_DUPLICATES,
    DB_REQUEST_DURATION,
    DB_REQUEST_LEVEL,
    DB_REQUEST_QUERIES,
    EXCEPTIONS,
    EXCEPTIONS_LEVEL,
    REQUEST_DURATION,
    REQUEST_LEVEL,
    UNMATCHED_ROUTE,
    VIEW_DURATION,
    RouteTags,
    TagCache,
)
from zibrato.instruments import LevelBuffer
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER, Event

# Distinct SQL texts remembered per request to spot duplicates; past this, a request that
# runs ever-new statements stops growing memory and its later duplicates go uncounted.
MAX_DISTINCT_STATEMENTS = 10_000


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


class RequestState:
    """What one request accumulates until its adapter records it.

    Class-level defaults: a request sets only what it learns (cheaper than an
    ``__init__``, and this is made for every request).
    """

    route: str = UNMATCHED_ROUTE
    # The status as the framework gives it ("200 OK" or 200); None: no response was made.
    status: str | int | None = None
    # The view's time in seconds (None: no view ran); an adapter that learns when the view
    # started before it learns when it ended keeps the start (perf_counter()) meanwhile.
    view: float | None = None
    view_start: float | None = None
    error: str | None = None
    view_failed = False
    tally: QueryTally | None = None

    def add_query(self, namespace: str, statement: object, seconds: float) -> None:
        """Count one query of this request."""
        tally = self.tally
        if tally is None:
            tally = self.tally = QueryTally()
        tally.add(namespace, statement, seconds)

    def note_error(self, error: str, *, in_view: bool) -> None:
        """Note the request's error (the first one noted wins)."""
        if self.error is None:
            self.error = error
            self.view_failed = in_view


# The request being measured in this context (None outside requests and on excluded paths).
current_request: ContextVar[RequestState | None] = ContextVar("zibrato_request", default=None)


def append_all(sink: LevelBuffer, events: list[Event]) -> None:
    """Append ``events`` to one level's buffer as a client would, one length check for all."""
    queue = sink.queue
    if len(queue) + len(events) <= sink.soft_cap:
        queue.extend(events)
    else:
        for event in events:
            sink.overflow(queue, event)


class RequestRecorder:
    """Record whole requests of one app into one client, at the levels the app configured.

    >>> recorder = RequestRecorder(client, tags=TagCache(), namespace="default")  # doctest: +SKIP
    >>> recorder.record(state, "GET", 0.012)

    ``namespace`` is the app's default database namespace, where a request that ran no
    query records 0 (None: the app has no database); an adapter that finds the app's
    database later sets it then. This runs for every request, so it skips the client's
    per-call checks and appends the request's events in the client's own shape, all at
    once: the timers, the error's counter, the per-request database metrics.
    """

    __slots__ = (
        "_database",
        "_error",
        "_request",
        "_same_level",
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
        request_level: str = REQUEST_LEVEL,
        db_level: str = DB_REQUEST_LEVEL,
        namespace: str | None = None,
    ) -> None:
        self.client = client
        self.publisher = client.publisher
        self.tags = tags
        self.namespace = namespace
        # The client's own buffers (None below its threshold), as its timers use them.
        self._request = client._sink(request_level)
        self._database = client._sink(db_level)
        self._error = client._sink(EXCEPTIONS_LEVEL)
        self._same_level = levels.normalize(request_level) == levels.normalize(db_level)

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
        sink = self._request
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

    def _add_database(
        self, events: list[Event], route: RouteTags, tally: QueryTally | None
    ) -> None:
        """Add the per-request database events to ``events`` (or to their own level's buffer)."""
        if tally is not None:
            database = database_events(tally, route)
        elif self.namespace is not None:
            database = zero_events(route, self.namespace)
        else:
            return
        if self._same_level:
            events += database
        elif self._database is not None:
            append_all(self._database, database)

    def record_unit(self, tally: QueryTally) -> None:
        """Record the queries of a unit of work that is not a request (no route)."""
        if self._database is not None:
            append_all(self._database, database_events(tally, self.tags.route(None)))


def database_events(tally: QueryTally, route: RouteTags) -> list[Event]:
    """Return the per-request database events of ``tally`` (queries, time, duplicates)."""
    events: list[Event] = []
    for namespace, (queries, seconds) in tally.namespaces.items():
        tags = route.database(namespace)
        events.append((DISTRIBUTION, DB_REQUEST_QUERIES, queries, None, tags))
        events.append((TIMER, DB_REQUEST_DURATION, seconds, None, tags))
    events.append((DISTRIBUTION, DB_REQUEST_DUPLICATES, tally.duplicates, None, route.route))
    return events


def zero_events(route: RouteTags, namespace: str) -> list[Event]:
    """Return the per-request database events of a request that ran no query."""
    tags = route.database(namespace)
    return [
        (DISTRIBUTION, DB_REQUEST_QUERIES, 0, None, tags),
        (TIMER, DB_REQUEST_DURATION, 0.0, None, tags),
        (DISTRIBUTION, DB_REQUEST_DUPLICATES, 0, None, route.route),
    ]
