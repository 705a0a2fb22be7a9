"""The exclusive-time arithmetic of ``zibrato.framework.breakdown``: nested work counts once
as the innermost component, overlapping work as the union of its wall-clock time, and the
parts always add up to the unit's time. The frameworks' nested views are in
``tests/django/test_django_why_slow.py`` and ``tests/flask/test_flask_why_slow.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from time import perf_counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zibrato import Zibrato
from zibrato.framework import schema
from zibrato.framework.breakdown import (
    APP,
    CACHE,
    COMPONENTS,
    DB,
    HTTP_CLIENT,
    TEMPLATE,
    Breakdown,
    NoBreakdown,
)
from zibrato.framework.units import RequestRecorder, RequestState, current_unit
from zibrato.testing import capture


def parts_of(breakdown: Breakdown, seconds: float, end: float | None = None) -> dict[str, float]:
    return dict(breakdown.parts(seconds, end=end))


def test_nested_work_counts_as_the_innermost_component() -> None:
    b = Breakdown()
    cache = b.open(CACHE, 1.0)  # a cached value...
    call = b.open(HTTP_CLIENT, 1.5)  # ...computed with an HTTP call
    b.close(call, 3.5)
    b.close(cache, 4.0)
    render = b.open(TEMPLATE, 5.0)  # a template that runs a query
    query = b.open(DB, 5.5)
    b.close(query, 6.5)
    b.close(render, 7.0)
    assert parts_of(b, 10.0) == {"http.client": 2.0, "cache": 1.0, "db": 1.0, "template": 1.0,
                                 APP: 5.0}  # fmt: skip


def test_work_told_once_over_counts_as_a_span_would() -> None:
    b = Breakdown()
    render = b.open(TEMPLATE, 1.0)
    b.add(DB, 1.5, 2.5)  # a query inside the render, told when it is over
    b.close(render, 3.0)
    b.add(DB, 4.0, 4.5)  # one outside any span
    assert parts_of(b, 5.0) == {"db": 1.5, "template": 1.0, APP: 2.5}


def test_work_told_late_counts_only_what_no_other_span_took() -> None:
    b = Breakdown()
    call = b.open(HTTP_CLIENT, 2.0)  # another thread's call opened while a query ran...
    b.close(call, 3.0)
    b.add(DB, 1.0, 4.0)  # ...from 1 to 4: only what followed the call is the query's
    assert parts_of(b, 5.0) == {"db": 1.0, "http.client": 1.0, APP: 3.0}


def test_only_what_took_time_is_reported_and_app_is_the_remainder() -> None:
    b = Breakdown()
    span = b.open(DB, 0.0)
    b.close(span, 0.25)
    assert list(b.parts(1.0)) == [("db", 0.25), (APP, 0.75)]
    assert list(Breakdown().parts(1.0)) == [(APP, 1.0)]


def test_overlapping_spans_count_their_union_once() -> None:
    b = Breakdown()
    first = b.open(HTTP_CLIENT, 0.0)  # two calls at once (asyncio.gather, two threads)
    second = b.open(HTTP_CLIENT, 1.0)
    b.close(first, 2.0)  # out of order: the first ends before the second
    b.close(second, 3.0)
    assert parts_of(b, 4.0) == {"http.client": 3.0, APP: 1.0}


def test_a_span_left_open_counts_until_the_end_and_later_closes_are_ignored() -> None:
    b = Breakdown()
    render = b.open(TEMPLATE, 1.0)  # a render that raised past its hook
    assert parts_of(b, 3.0, end=3.0) == {"template": 2.0, APP: 1.0}
    b.close(render, 9.0)
    assert b.seconds[TEMPLATE] == 2.0


def test_app_is_never_negative() -> None:
    b = Breakdown()
    span = b.open(DB, 0.0)
    b.close(span, 2.0)  # work of another thread that outlived the unit's own clock
    assert parts_of(b, 1.0) == {"db": 2.0, APP: 0.0}


def test_a_switched_off_breakdown_measures_nothing() -> None:
    b = NoBreakdown()
    b.close(b.open(DB, 0.0), 5.0)
    assert list(b.parts(10.0)) == []


@given(
    st.lists(
        st.tuples(st.sampled_from([DB, HTTP_CLIENT, CACHE, TEMPLATE]), st.floats(0, 1)),
        max_size=30,
    )
)
def test_parts_add_up_to_the_unit_for_any_nesting(spans: list[tuple[int, float]]) -> None:
    """Open spans one inside the other, close them in reverse: parts sum to the whole."""
    b = Breakdown()
    now = 0.0
    opened = []
    for component, gap in spans:
        now += gap
        opened.append(b.open(component, now))
    for span in reversed(opened):
        now += 0.5
        b.close(span, now)
    total = now + 1.0
    found = parts_of(b, total)
    assert sum(found.values()) == pytest.approx(total)
    assert all(value >= 0 for value in found.values())
    assert set(found) <= {*COMPONENTS, APP}


def test_threads_in_the_requests_context_count_as_the_union_of_wall_clock() -> None:
    """Two threads that carry the request's context run 80 ms queries at once."""
    state = RequestState()
    token = current_unit.set(state)
    start = perf_counter()
    try:

        def query() -> None:
            unit = current_unit.get()
            assert unit is state
            span = unit.open_span(DB, perf_counter())
            time.sleep(0.08)
            unit.close_span(span, perf_counter())

        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(query,)) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        current_unit.reset(token)
    seconds = perf_counter() - start
    assert state.breakdown is not None
    found = parts_of(state.breakdown, seconds)
    assert 0.075 < found["db"] < 0.160  # the union (about 80 ms), not the sum (160 ms)
    assert sum(found.values()) == pytest.approx(seconds)


def test_asyncio_gather_in_the_requests_context_counts_the_union() -> None:
    state = RequestState()

    async def call() -> None:
        unit = current_unit.get()
        assert unit is state
        span = unit.open_span(HTTP_CLIENT, perf_counter())
        await asyncio.sleep(0.06)
        unit.close_span(span, perf_counter())

    async def view() -> float:
        token = current_unit.set(state)
        start = perf_counter()
        try:
            await asyncio.gather(call(), call(), call())
        finally:
            current_unit.reset(token)
        return perf_counter() - start

    seconds = asyncio.run(view())
    assert state.breakdown is not None
    found = parts_of(state.breakdown, seconds)
    assert 0.055 < found["http.client"] < 0.120  # three 60 ms calls at once: about 60 ms
    assert sum(found.values()) == pytest.approx(seconds)


def recorded_parts(state: RequestState, seconds: float) -> dict[str, float]:
    """Record ``state`` as a request of ``seconds``; return its breakdown as recorded."""
    with capture() as metrics:
        client = Zibrato()
        RequestRecorder(client, tags=schema.TagCache()).record(state, "GET", seconds)
        client.close(linger=0)
    return {e.tags[schema.COMPONENT]: e.value for e in metrics.filter(schema.BREAKDOWN)}


def test_queries_before_any_span_count_without_a_breakdown_and_with_it_after() -> None:
    """Queries are top-level db time until a component's span opens (no Breakdown made
    for them: most requests); one overlapping another counts once; after a span opened
    they go through the Breakdown, which carries on from the last query's end."""
    state = RequestState()
    state.add_query("default", "SELECT 1", 0.010, 1.010)  # 1.000 - 1.010
    state.add_query("default", "SELECT 2", 0.010, 1.015)  # from 1.005 (another thread's)
    assert state.breakdown is None and state.db_spent == pytest.approx(0.015)
    assert recorded_parts(state, 0.1) == pytest.approx({"db": 0.015, APP: 0.085})

    render = state.open_span(TEMPLATE, 1.020)
    state.add_query("default", "SELECT 3", 0.005, 1.030)  # inside the render: db
    state.close_span(render, 1.040)
    state.add_query("default", "SELECT 4", 0.010, 1.045)  # began in the render: from 1.040
    found = recorded_parts(state, 0.1)
    assert found == pytest.approx({"db": 0.025, "template": 0.015, APP: 0.06})
    assert sum(found.values()) == pytest.approx(0.1)
