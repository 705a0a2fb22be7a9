"""Where one unit of work's time goes: exclusive seconds per component, adding up.

A unit of work (a web request, a Celery task) is timed as a whole by its front end. The
hooks of each component — the database, outgoing HTTP, the cache, templates — open a
span on the unit's :class:`Breakdown` when they start and close it when they end. At
any instant the time belongs to the component of the most recently opened span that is
still open, so:

* nested work counts once, as the innermost component: a query run while a template
  renders is ``db`` time, an HTTP call made to compute a cached value ``http.client``;
* work overlapping in threads or ``asyncio.gather`` (within the unit's context) counts
  as the union of its wall-clock time, never twice;
* what no span covers is the unit's own code and its framework's (``app``): the
  remainder, so the parts always add up to the unit's time.

The whole API, as the web adapters use it and a task integration would::

    breakdown = Breakdown()
    span = breakdown.open(TEMPLATE, perf_counter()) # a hook, as its work starts
    ...
    breakdown.close(span, perf_counter())           # as it ends (raised or not)
    breakdown.add(DB, start, end)                   # work that holds no other: a query
    for component, seconds in breakdown.parts(total):
        ...                                          # non-zero components, then "app"
    spent = breakdown.finish()                      # or: seconds per component, by index

Spans take the timestamps their hooks read anyway (``time.perf_counter()``), so a span
costs no clock read of its own: a tuple, a list append and two subtractions. Work that
never contains another component's (a database query) is counted once it is over with
:meth:`Breakdown.add`, cheaper still. A span
still open when :meth:`Breakdown.parts` is called (a render that raised past its hook)
is counted up to then (or ``end``); spans closed after that are ignored. Spans are not locked:
two threads that open or close at the same microsecond can misplace that microsecond,
never more, and a part is never negative.

>>> b = Breakdown()
>>> render = b.open(TEMPLATE, 0.0)
>>> query = b.open(DB, 0.010)
>>> b.close(query, 0.040); b.close(render, 0.050)
>>> [(name, round(s, 3)) for name, s in b.parts(0.100)]
[('db', 0.03), ('template', 0.02), ('app', 0.05)]
"""

from __future__ import annotations

from time import perf_counter

from zibrato.framework.schema import APP_COMPONENT, BREAKDOWN_COMPONENTS

# The components, as indexes (a span's first item) and as their tag values.
DB, HTTP_CLIENT, CACHE, TEMPLATE = 0, 1, 2, 3
COMPONENTS = BREAKDOWN_COMPONENTS[:-1]  # ("db", "http.client", "cache", "template")
APP = APP_COMPONENT

Span = tuple[int]


class Breakdown:
    """The exclusive time of one unit of work per component (see the module's docstring)."""

    __slots__ = ("_open", "_since", "finished", "seconds")
    measures = True  # a NoBreakdown does not

    def __init__(self, *, since: float = 0.0) -> None:
        """``since``: when the unit's work counted so far ended (perf_counter()); work
        added later that began before it counts from then on only."""
        self.seconds = [0.0] * len(COMPONENTS)
        self.finished = False
        self._open: list[Span] = []
        self._since = since

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={s:.6f}" for n, s in zip(COMPONENTS, self.seconds, strict=True))
        return f"<Breakdown {shown} open={len(self._open)}>"

    def open(self, component: int, now: float) -> Span:
        """Start a span of ``component`` at ``now``; return it for :meth:`close`."""
        spans = self._open
        if spans:
            self.seconds[spans[-1][0]] += now - self._since
        self._since = now
        span = (component,)  # a new object each time: spans are told apart by identity
        spans.append(span)
        return span

    def close(self, span: Span, now: float) -> None:
        """End ``span`` at ``now`` (spans of other threads may have opened meanwhile)."""
        spans = self._open
        if not spans:
            return  # parts() was already called: the unit is over
        self.seconds[spans[-1][0]] += now - self._since
        self._since = now
        if spans[-1] is span:
            spans.pop()
            return
        for index in range(len(spans) - 2, -1, -1):  # closed out of order: another thread's
            if spans[index] is span:
                del spans[index]
                return

    def add(self, component: int, start: float, end: float) -> None:
        """Count ``component`` from ``start`` to ``end``: work that opened no span inside
        (a query), told once it is over; the same as ``close(open(...))``, cheaper."""
        since = self._since
        if start >= since:
            spans = self._open
            if spans:
                self.seconds[spans[-1][0]] += start - since
            self.seconds[component] += end - start
            self._since = end
        elif end > since:  # other threads' spans opened or closed meanwhile: the rest only
            self.seconds[component] += end - since
            self._since = end

    def finish(self, *, end: float | None = None) -> list[float]:
        """End the unit: return each component's seconds, indexed like :data:`COMPONENTS`
        (what a recorder reads; :meth:`parts` says it with names and the ``app`` part).

        Spans still open stop at ``end`` (default: now, as the unit is recorded).
        """
        spans = self._open
        if spans:
            now = perf_counter() if end is None else end
            self.seconds[spans[-1][0]] += now - self._since
            spans.clear()
        self.finished = True
        return self.seconds

    def parts(self, seconds: float, *, end: float | None = None) -> list[tuple[str, float]]:
        """Return ``(component, seconds)`` for each component that took time, then ``app``.

        ``seconds`` is the unit's whole time; spans still open stop at ``end`` (default:
        now, as the unit is recorded).
        """
        found = []
        busy = 0.0
        for index, spent in enumerate(self.finish(end=end)):
            if spent > 0:
                busy += spent
                found.append((COMPONENTS[index], spent))
        found.append((APP, seconds - busy if seconds > busy else 0.0))
        return found


class NoBreakdown(Breakdown):
    """A breakdown that measures nothing: a unit of work whose breakdown is switched off."""

    __slots__ = ()
    measures = False

    def open(self, component: int, now: float) -> Span:
        return (component,)

    def close(self, span: Span, now: float) -> None:
        return None

    def add(self, component: int, start: float, end: float) -> None:
        return None

    def finish(self, *, end: float | None = None) -> list[float]:
        return []

    def parts(self, seconds: float, *, end: float | None = None) -> list[tuple[str, float]]:
        return []
