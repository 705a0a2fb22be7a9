"""Where one unit of work's time went: what its hooks note, and recording it.

The hooks of each component (database, outgoing HTTP, cache, templates) note what they
did on the unit's state (:class:`TimeSpentState`, under
:class:`~zibrato.framework.units.UnitState`): its
:class:`~zibrato.framework.breakdown.Breakdown`, its outgoing calls, cache calls, renders
and repeated statements; which of these a unit measures is its app's :class:`Switches`.
When the unit ends, its recorder hands the state to a :class:`TimeSpentRecorder`, which
appends bare values to the series of the unit's cached tags (``zibrato.series``), as the
rest of the unit is recorded; nothing builds a tags dictionary per unit. It records, for
a unit's kind (its ``UnitTags``):

* the breakdown (``http.server.request.breakdown`` for a request, ``celery.task.breakdown``
  for a task): one value for each component that took time, and one for ``app``;
* ``http.client.request.duration`` for each outgoing call, tagged with the unit;
* a request's cache and template time (``cache.request.*``, ``template.request.duration``);
* ``db.client.statement.repeats`` for each statement the unit repeated (at the level of
  the per-unit database metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import FrameType

from zibrato.client import Zibrato
from zibrato.framework.breakdown import COMPONENTS, DB, Breakdown, NoBreakdown, Span
from zibrato.framework.queries import QueryTally
from zibrato.framework.recording import MAX_CACHED_SERIES, EventWriter, SeriesCache, recording
from zibrato.framework.schema import (
    BREAKDOWN_COMPONENTS,
    CACHE_ALIAS,
    CACHE_REQUEST_CALLS,
    CACHE_REQUEST_DURATION,
    CACHE_REQUEST_HITS,
    CACHE_REQUEST_MISSES,
    COMPONENT,
    DB_REQUEST_LEVEL,
    HTTP_CLIENT_DURATION,
    REQUEST_LEVEL,
    STATEMENT_REPEATS,
    TEMPLATE_NAME,
    TEMPLATE_REQUEST_DURATION,
    UnitTags,
)
from zibrato.framework.statements import SAMPLER, Location
from zibrato.framework.templates import NAMES
from zibrato.protocol import DISTRIBUTION, TIMER
from zibrato.series import Series

# Outgoing calls as a state notes them: ((server.address, server.port), method and status
# as the library gives them, error.type, seconds); normalized when first tagged.
Call = tuple[tuple[str, str], object, object, str | None, float]
Parts = list[Series | EventWriter]
_SPANNED = tuple(index for index in range(len(COMPONENTS)) if index != DB)


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


class TimeSpentState:
    """What a unit of work notes about where its time goes (the part of
    :class:`~zibrato.framework.units.UnitState` that the component hooks fill in).

    Class-level defaults: each is made on first use, so a unit that used no component
    costs nothing here.
    """

    switches: Switches = ALL_ON
    # Made when a component's span first opens. Before that (and in most units, for good)
    # queries are top-level db time, counted in two floats with Breakdown.add's rule for
    # overlaps (UnitState.add_query): no object made, nothing for the collector to track.
    breakdown: Breakdown | None = None
    db_spent = 0.0
    db_until = 0.0  # perf_counter() when the last query counted in db_spent ended
    calls: list[Call] | None = None  # outgoing calls (see Call)
    cache: dict[str, list[float]] | None = None  # alias -> [calls, hits, misses, seconds]
    renders: list[tuple[str, float]] | None = None  # (template.name, seconds) per render
    repeats: dict[tuple[str, str], Location] | None = None  # (namespace, SQL) -> location
    # Whether a breakdown, calls, cache, renders or repeats exist: one check when recording.
    noted = False
    # Renders in progress, for hooks that see a render's start and end apart (Flask's
    # signals): (template, start, span).
    rendering: list[tuple[object, float, Span]] | None = None

    def start_breakdown(self) -> Breakdown:
        """Return this unit's breakdown, made now (hooks call it when it is None)."""
        found = self.breakdown
        if found is None:
            found = self.breakdown = (
                Breakdown(since=self.db_until) if self.switches.breakdown else _NO_BREAKDOWN
            )
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

    def add_call(self, call: Call) -> None:
        """Note one outgoing HTTP call (see :data:`Call`), recorded with the unit."""
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

    def locate(self, namespace: str, statement: str, frame: FrameType | None) -> None:
        """Note where a repeated statement was issued: the walk goes out from ``frame``
        (the hook's that counted the query), sampled (``statements.SAMPLER``)."""
        repeats = self.repeats
        if repeats is None:
            repeats = self.repeats = {}
            self.noted = True
        repeats[namespace, statement] = SAMPLER.locate(namespace, statement, frame)


class TimeSpentRecorder:
    """Record where the units of one kind of unit spent their time, into one client.

    ``level`` is the units' level and ``db_level`` their database metrics' (None: the
    client does not record it, nothing is recorded there); ``breakdown`` the breakdown's
    metric name (None: not recorded, the ``BREAKDOWN`` setting is off).

    >>> time_spent = TimeSpentRecorder(client, level="info", db_level="info",
    ...                                breakdown=BREAKDOWN)          # doctest: +SKIP
    >>> time_spent.record_breakdown(state, 0.012, time_spent.parts(unit))
    """

    __slots__ = (
        "_cache_calls",
        "_cache_hits",
        "_cache_misses",
        "_cache_time",
        "_calls",
        "_parts",
        "_repeats",
        "_templates",
        "breakdown",
        "client",
        "db_level",
        "level",
    )

    def __init__(
        self, client: Zibrato, *, level: str | None, db_level: str | None, breakdown: str | None
    ) -> None:
        self.client = client
        self.level = level
        self.db_level = db_level
        self.breakdown = breakdown if level is not None else None
        in_level = level or REQUEST_LEVEL
        self._calls = SeriesCache(client, in_level, TIMER, HTTP_CLIENT_DURATION)
        self._cache_calls = SeriesCache(client, in_level, DISTRIBUTION, CACHE_REQUEST_CALLS)
        self._cache_hits = SeriesCache(client, in_level, DISTRIBUTION, CACHE_REQUEST_HITS)
        self._cache_misses = SeriesCache(client, in_level, DISTRIBUTION, CACHE_REQUEST_MISSES)
        self._cache_time = SeriesCache(client, in_level, TIMER, CACHE_REQUEST_DURATION)
        self._templates = SeriesCache(client, in_level, TIMER, TEMPLATE_REQUEST_DURATION)
        in_database = db_level or DB_REQUEST_LEVEL
        self._repeats = SeriesCache(client, in_database, DISTRIBUTION, STATEMENT_REPEATS)
        self._parts: dict[UnitTags, Parts] = {}

    def parts(self, unit: UnitTags) -> Parts | None:
        """Return the series of the parts of ``unit``'s breakdown: one per component, in
        the breakdown's order, then ``app`` (None: the breakdown is not recorded)."""
        if self.breakdown is None or self.level is None:
            return None
        found = self._parts.get(unit)
        if found is None:
            level, name = self.level, self.breakdown
            found = [
                recording(self.client, level, TIMER, name, unit.tagged(COMPONENT, component))
                for component in BREAKDOWN_COMPONENTS
            ]
            if len(self._parts) < MAX_CACHED_SERIES:
                self._parts[unit] = found
        return found

    def record_breakdown(self, state: TimeSpentState, seconds: float, parts: Parts) -> None:
        """Record where a unit's ``seconds`` went: each component that took time, then
        ``app``, the rest (``parts``: from :meth:`parts`)."""
        found = state.breakdown
        db = state.db_spent  # queries counted before any span opened
        busy = 0.0
        if found is not None:
            if not found.measures:
                return  # switched off for this unit
            spent = found.finish()
            db += spent[DB]
            for index in _SPANNED:
                part = spent[index]
                if part > 0.0:
                    busy += part
                    parts[index].add(part)
        if db > 0.0:
            busy += db
            parts[DB].add(db)
        parts[-1].add(seconds - busy if seconds > busy else 0.0)

    def record_calls(self, unit: UnitTags, calls: list[Call]) -> None:
        """Record a unit's outgoing HTTP calls, tagged with the unit."""
        if self.level is not None:
            add = self._calls.add
            for address, method, status, error, spent in calls:
                add(unit.client_call(address, method, status, error), spent)

    def record_cache(self, unit: UnitTags, cache: dict[str, list[float]]) -> None:
        """Record a request's cache calls, hits, misses and time per alias."""
        if self.level is not None:
            for alias, (calls, hits, misses, spent) in cache.items():
                tags = unit.tagged(CACHE_ALIAS, alias)
                self._cache_calls.add(tags, calls)
                self._cache_hits.add(tags, hits)
                self._cache_misses.add(tags, misses)
                self._cache_time.add(tags, spent)

    def record_renders(self, unit: UnitTags, renders: list[tuple[str, float]]) -> None:
        """Record a request's template time, summed per template name."""
        if self.level is None:
            return
        if len(renders) == 1:
            name, spent = renders[0]
            self._templates.add(unit.tagged(TEMPLATE_NAME, name), spent)
            return
        by_name: dict[str, float] = {}
        for name, spent in renders:
            by_name[name] = by_name.get(name, 0.0) + spent
        for name, spent in by_name.items():
            self._templates.add(unit.tagged(TEMPLATE_NAME, name), spent)

    def record_repeats(
        self, unit: UnitTags, tally: QueryTally, repeats: dict[tuple[str, str], Location]
    ) -> None:
        """Record how many times each repeated statement ran in one unit."""
        if self.db_level is not None:
            for (namespace, statement), location in repeats.items():
                tags = SAMPLER.tags(unit.unit, namespace, statement, location)
                self._repeats.add(tags, tally.runs(namespace, statement))
