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

Where the time goes (``docs/web-metrics.md``): the hooks of each component (database,
outgoing HTTP, cache, templates) also open and close spans on the request's
:class:`~zibrato.framework.breakdown.Breakdown` (:meth:`RequestState.open_span`) and
note what they did on the state; the recorder adds all of it to the request's events in
one step (:func:`breakdown_events`): ``http.server.request.breakdown`` for each component
that took time and for ``app``, each outgoing call, the cache and template time, and the
repeated statements (:mod:`zibrato.framework.statements`). Which of these a request
measures is its app's :class:`Switches`.

>>> state = RequestState()
>>> for _ in range(3):
...     state.add_query("shop", "SELECT * FROM item WHERE id = ?", 0.001)
>>> state.tally.queries, state.tally.duplicates
(3, 2)
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from dataclasses import dataclass

from zibrato import levels
from zibrato.client import Zibrato
from zibrato.framework.breakdown import DB, Breakdown, NoBreakdown, Span
from zibrato.framework.queries import QueryTally
from zibrato.framework.schema import (
    BREAKDOWN,
    CACHE_ALIAS,
    CACHE_REQUEST_CALLS,
    CACHE_REQUEST_DURATION,
    CACHE_REQUEST_HITS,
    CACHE_REQUEST_MISSES,
    DB_REQUEST_DUPLICATES,
    DB_REQUEST_DURATION,
    DB_REQUEST_LEVEL,
    DB_REQUEST_QUERIES,
    EXCEPTIONS,
    EXCEPTIONS_LEVEL,
    HTTP_CLIENT_DURATION,
    REQUEST_DURATION,
    REQUEST_LEVEL,
    STATEMENT_REPEATS,
    TEMPLATE_NAME,
    TEMPLATE_REQUEST_DURATION,
    UNMATCHED_ROUTE,
    VIEW_DURATION,
    RouteTags,
    TagCache,
)
from zibrato.framework.statements import REPEATED, SAMPLER, Location
from zibrato.framework.templates import NAMES
from zibrato.instruments import LevelBuffer
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER, Event


@dataclass(frozen=True)
class Switches:
    """Which parts of "where the time goes" a unit of work measures (its app's settings)."""

    breakdown: bool = True
    http_client: bool = True
    cache: bool = True
    templates: bool = True
    statements: bool = True


ALL_ON = Switches()
_NO_BREAKDOWN = NoBreakdown()


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
    # Where the time goes: each made on first use (see the module's docstring).
    switches: Switches = ALL_ON
    breakdown: Breakdown | None = None
    # Outgoing calls: ((server.address, server.port), method and status as the library
    # gives them, error.type, seconds); normalized when recorded.
    calls: list[tuple[tuple[str, str], object, object, str | None, float]] | None = None
    cache: dict[str, list[float]] | None = None  # alias -> [calls, hits, misses, seconds]
    renders: list[tuple[str, float]] | None = None  # (template.name, seconds) per render
    # Whether a breakdown, calls, cache or renders exist: one check when recording.
    noted = False
    # Renders in progress, for hooks that see a render's start and end apart (Flask's
    # signals): (template, start, span).
    rendering: list[tuple[object, float, Span]] | None = None
    repeats: dict[tuple[str, str], Location] | None = None  # (namespace, SQL) -> location

    def add_query(
        self, namespace: str, statement: object, seconds: float, end: float | None = None
    ) -> None:
        """Count one query of this request (a repeated one is located: ``statements``);
        with ``end`` (its perf_counter() when it ended), it is a ``db`` part of the
        request's time breakdown too."""
        if end is not None:
            (self.breakdown or self.start_breakdown()).add(DB, end - seconds, end)
        tally = self.tally
        if tally is None:
            tally = self.tally = QueryTally()
        if tally.add(namespace, statement, seconds) == REPEATED and self.switches.statements:
            self._locate(namespace, str(statement))

    def _locate(self, namespace: str, statement: str) -> None:
        repeats = self.repeats
        if repeats is None:
            repeats = self.repeats = {}
        # From the frame of the hook that counted the query: the walk goes out from there.
        repeats[namespace, statement] = SAMPLER.locate(namespace, statement, sys._getframe(2))

    def start_breakdown(self) -> Breakdown:
        """Return this request's breakdown, made now (hooks call it when it is None)."""
        found = self.breakdown
        if found is None:
            found = self.breakdown = Breakdown() if self.switches.breakdown else _NO_BREAKDOWN
            self.noted = True
        return found

    def open_span(self, component: int, now: float) -> Span:
        """Start a span of ``component`` (``breakdown.DB``...) at ``now`` (perf_counter)."""
        return (self.breakdown or self.start_breakdown()).open(component, now)

    def close_span(self, span: Span | None, now: float) -> None:
        """End a span that :meth:`open_span` started."""
        found = self.breakdown
        if found is not None and span is not None:
            found.close(span, now)

    def add_call(self, call: tuple[tuple[str, str], object, object, str | None, float]) -> None:
        """Note one outgoing HTTP call (see :attr:`calls`), recorded with the request."""
        calls = self.calls
        if calls is None:
            calls = self.calls = []
            self.noted = True
        calls.append(call)

    def add_cache_call(self, alias: str, seconds: float, hits: int, misses: int) -> None:
        """Note one call to the cache ``alias`` (a bounded tag value)."""
        cache = self.cache
        if cache is None:
            cache = self.cache = {}
            self.noted = True
        totals = cache.get(alias)
        if totals is None:
            cache[alias] = [1, hits, misses, seconds]
        else:
            totals[0] += 1
            totals[1] += hits
            totals[2] += misses
            totals[3] += seconds

    def abandon_renders(self, now: float) -> None:
        """End the renders in progress at ``now``: they raised, no end will be told."""
        rendering = self.rendering
        while rendering:
            template, start, span = rendering.pop()
            self.close_span(span, now)
            self.add_render(NAMES.tag(getattr(template, "name", None)), now - start)

    def add_render(self, name: str, seconds: float) -> None:
        """Note one template render (``name``: a bounded ``template.name``)."""
        renders = self.renders
        if renders is None:
            renders = self.renders = []
            self.noted = True
        renders.append((name, seconds))

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
        "breakdown",
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
        breakdown: bool = True,
    ) -> None:
        self.client = client
        self.breakdown = breakdown  # the app's BREAKDOWN: record http.server.request.breakdown
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
            self._add_database(events, tags.db, state.tally, state.repeats)
        if state.noted:
            events += breakdown_events(state, tags.db, seconds)
        elif self.breakdown:
            # breakdown_events() of a request that measured no component, written out:
            # this is most requests.
            events.append((TIMER, BREAKDOWN, seconds, None, tags.db.app))
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
        self,
        events: list[Event],
        route: RouteTags,
        tally: QueryTally | None,
        repeats: dict[tuple[str, str], Location] | None = None,
    ) -> None:
        """Add the per-request database events to ``events`` (or to their own level's buffer)."""
        if tally is not None:
            database = database_events(tally, route)
            if repeats:
                database += statement_events(tally, repeats, route)
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


def breakdown_events(state: RequestState, route: RouteTags, seconds: float) -> list[Event]:
    """Return where one request's time went, as events for ``route``: the breakdown of
    its ``seconds`` (each component that took time, and ``app``), its outgoing HTTP
    calls, and its cache and template time (only what it did)."""
    found = state.breakdown
    if found is None:  # no component ran (or the breakdown is off): all of it was the app's
        events: list[Event] = (
            [(TIMER, BREAKDOWN, seconds, None, route.app)] if state.switches.breakdown else []
        )
    else:
        tagged = route.components
        events = [
            (TIMER, BREAKDOWN, spent, None, tagged[component])
            for component, spent in found.parts(seconds)
        ]
    if state.noted:
        events += noted_events(state, route)
    return events


def noted_events(state: RequestState, route: RouteTags) -> list[Event]:
    """Return the events of a request's outgoing calls, cache calls and template renders."""
    events: list[Event] = []
    if state.calls:
        for address, method, status, error, spent in state.calls:
            tags = route.client_call(address, method, status, error)
            events.append((TIMER, HTTP_CLIENT_DURATION, spent, None, tags))
    if state.cache:
        for alias, (calls, hits, misses, spent) in state.cache.items():
            tags = route.tagged(CACHE_ALIAS, alias)
            events.append((DISTRIBUTION, CACHE_REQUEST_CALLS, calls, None, tags))
            events.append((DISTRIBUTION, CACHE_REQUEST_HITS, hits, None, tags))
            events.append((DISTRIBUTION, CACHE_REQUEST_MISSES, misses, None, tags))
            events.append((TIMER, CACHE_REQUEST_DURATION, spent, None, tags))
    if state.renders:
        by_name: dict[str, float] = {}
        for name, spent in state.renders:
            by_name[name] = by_name.get(name, 0.0) + spent
        for name, spent in by_name.items():
            tags = route.tagged(TEMPLATE_NAME, name)
            events.append((TIMER, TEMPLATE_REQUEST_DURATION, spent, None, tags))
    return events


def statement_events(
    tally: QueryTally, repeats: dict[tuple[str, str], Location], route: RouteTags
) -> list[Event]:
    """Return one event per repeated statement: how many times it ran in this unit."""
    return [
        (
            DISTRIBUTION,
            STATEMENT_REPEATS,
            tally.runs(namespace, statement),
            None,
            SAMPLER.tags(route.name, namespace, statement, location),
        )
        for (namespace, statement), location in repeats.items()
    ]
