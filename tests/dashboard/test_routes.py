"""Route summaries: a route's values pooled across methods, statuses, errors and sources."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zibrato.aggregation import Aggregator, Series, distribution_stats, quantile
from zibrato.backends.dashboard.routes import (
    ERRORS,
    QUERIES,
    REQUEST,
    VIEW,
    pooled_stats,
    summarize_routes,
    weighted_quantile,
)

values = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


def timer(name: str, tags: dict[str, str], vals: list[float], count: int | None = None) -> Series:
    ordered = sorted(vals)
    stats = distribution_stats(ordered)
    if count is not None:  # as the aggregator reports a sampled series
        stats["count"] = count
    return Series(name, "timer", None, tags, stats, ordered)


def test_a_routes_percentiles_are_exact_over_all_its_series() -> None:
    ok = [0.02, 0.021, 0.025, 0.03] * 25
    failed = [2.0, 2.5]
    series = [
        timer(REQUEST, {"http.route": "/a", "http.response.status_code": "200"}, ok),
        timer(REQUEST, {"http.route": "/a", "http.response.status_code": "500"}, failed),
        timer(REQUEST, {"http.route": "/b", "http.response.status_code": "200"}, [0.1]),
    ]
    by_key = {(s.route, s.name): s for s in summarize_routes(series)}
    pooled = sorted(ok + failed)
    stats = by_key["/a", REQUEST].stats
    assert stats["count"] == 102
    assert stats["p99"] == pytest.approx(
        statistics.quantiles(pooled, n=100, method="inclusive")[98]
    )
    assert stats["p99"] > 1.0  # the slow failures show, as they would not in a mean of p99s
    assert stats["p50"] == pytest.approx(statistics.median(pooled))
    assert stats["max"] == 2.5 and stats["min"] == 0.02
    assert by_key["/a", ERRORS].stats == {"sum": 2}
    assert by_key["/b", ERRORS].stats == {"sum": 0}


def test_errors_are_5xx_or_an_error_type_and_other_metrics_are_pooled_too() -> None:
    series = [
        timer(REQUEST, {"http.route": "/x", "http.response.status_code": "404"}, [0.01]),
        timer(
            REQUEST,
            {"http.route": "/x", "http.response.status_code": "200", "error.type": "E"},
            [0.02],
        ),
        timer(VIEW, {"http.route": "/x", "http.request.method": "GET"}, [0.005]),
        timer(VIEW, {"http.route": "/x", "http.request.method": "POST"}, [0.007]),
        Series(
            QUERIES, "distribution", None, {"http.route": "/x"}, distribution_stats([3.0]), [3.0]
        ),
        timer("other.metric", {"http.route": "/x"}, [1.0]),
        timer(REQUEST, {"no.route": "here"}, [1.0]),
    ]
    by_key = {(s.route, s.name): s for s in summarize_routes(series)}
    assert set(by_key) == {("/x", REQUEST), ("/x", ERRORS), ("/x", VIEW), ("/x", QUERIES)}
    assert by_key["/x", ERRORS].stats["sum"] == 1
    assert by_key["/x", VIEW].stats["count"] == 2
    assert by_key["/x", QUERIES].type == "distribution"


@given(st.lists(st.tuples(values, st.integers(min_value=1, max_value=5)), min_size=1, max_size=40))
def test_a_weighted_quantile_is_the_quantile_of_the_repeated_values(
    weighted: list[tuple[float, int]],
) -> None:
    weighted.sort()
    repeated = [value for value, weight in weighted for _ in range(weight)]
    for pct in (1, 25, 50, 90, 95, 99, 100):
        assert weighted_quantile(weighted, pct) == pytest.approx(quantile(repeated, pct))


def test_a_sampled_series_weighs_what_it_really_counted() -> None:
    # /a: 1000 requests of which 10 were kept (all 1.0 s); /a again: 10 requests at 0.01 s.
    busy = timer(REQUEST, {"http.route": "/a"}, [1.0] * 10, count=1000)
    quiet = timer(REQUEST, {"http.route": "/a", "http.request.method": "POST"}, [0.01] * 10)
    stats = pooled_stats([busy, quiet])
    assert stats["count"] == 1010
    assert stats["p50"] == 1.0 and stats["p95"] == 1.0  # unweighted, half the values say 0.01


def test_summaries_match_what_the_aggregator_pools_itself() -> None:
    # The same values through the real aggregator, once per status and once pooled.
    agg = Aggregator()
    events = [
        (3, REQUEST, v / 1000, None, {"http.route": "/r", "s": str(v % 3)}) for v in range(1, 300)
    ]
    agg.add_events(events)
    rollup = agg.rollup(now=0.0, interval=1.0)
    (summary,) = [s for s in summarize_routes(rollup.series) if s.name == REQUEST]
    reference = distribution_stats(sorted(v / 1000 for v in range(1, 300)))
    for key in ("count", "sum", "min", "max", "p90", "p95", "p99"):
        assert summary.stats[key] == pytest.approx(reference[key]), key
    assert summary.stats["p50"] == pytest.approx(reference["median"])
