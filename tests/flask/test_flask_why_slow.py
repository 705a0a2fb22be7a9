"""Where a Flask request's time goes (``why_slow_site``): the breakdown on a view that nests
the components, Jinja2 templates through Flask's signals, outgoing HTTP, and the repeated
statement with the line that issues it (a view, a helper module, a lazy relationship in
a template); the sampling bounds under a 10 000-request N+1 load; each part turned off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from upstream_support import Upstream, upstream_server
from why_slow_site import APP_MS, SHELVES, UPSTREAM_MS, build, engine_for

from zibrato.framework import schema
from zibrato.framework.statements import MAX_PER_ROUTE, SAMPLER, WALK_EVERY
from zibrato.testing import CapturedMetrics
from zibrato_flask import Zibrato

BREAKDOWN = schema.BREAKDOWN
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    made = engine_for(tmp_path_factory.mktemp("why") / "why.db")
    yield made
    made.dispose()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_statements() -> Iterator[None]:
    SAMPLER.reset()
    yield
    SAMPLER.reset()


def site(engine: sa.Engine, **config: Any) -> Flask:
    app = build(engine, {f"ZIBRATO_{key}": value for key, value in config.items()})
    Zibrato(app).instrument_engine(engine, namespace="why")
    return app


def parts(metrics: CapturedMetrics, route: str) -> dict[str, float]:
    return {
        e.tags["component"]: e.value for e in metrics.filter(BREAKDOWN, tags={"http.route": route})
    }


def only(metrics: CapturedMetrics, name: str, **tags: str) -> Any:
    found = metrics.filter(name, tags=tags)
    assert len(found) == 1, (name, tags, found)
    return found[0]


def test_the_parts_of_a_nested_view_add_up_to_the_request(
    engine: sa.Engine, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    client = site(engine).test_client()
    client.get("/nested", query_string={"upstream": upstream.url("")})  # warm: first connections
    metrics.clear()
    response = client.get("/nested", query_string={"upstream": upstream.url("")})
    assert response.status_code == 200
    request = only(metrics, schema.REQUEST_DURATION).value
    found = parts(metrics, "/nested")
    assert set(found) == {"app", "db", "http.client", "template"}
    assert sum(found.values()) == pytest.approx(request, rel=0.01)
    assert 0.030 <= found["db"] < 0.030 + 0.015  # the query ran while the template rendered
    assert 0.025 <= found["template"] < 0.025 + 0.015
    assert UPSTREAM_MS / 1000 <= found["http.client"] < UPSTREAM_MS / 1000 + 0.030
    assert found["app"] >= APP_MS / 1000
    template = only(metrics, schema.TEMPLATE_REQUEST_DURATION)
    assert template.tags["template.name"] == "why/nested.html"
    assert template.value >= found["template"] + found["db"]
    call = only(metrics, schema.HTTP_CLIENT_DURATION)
    assert (
        call.tags["zibrato.route"] == "/nested" and call.tags["http.response.status_code"] == "200"
    )


def test_a_render_that_raises_counts_until_the_view_gives_up(
    engine: sa.Engine, metrics: CapturedMetrics
) -> None:
    with pytest.raises(LookupError):  # TESTING propagates the view's exception
        site(engine).test_client().get("/broken")
    template = only(metrics, schema.TEMPLATE_REQUEST_DURATION)
    assert template.tags["template.name"] == "why/broken.html" and template.value >= 0.020
    assert parts(metrics, "/broken")["template"] >= 0.020
    assert only(metrics, schema.REQUEST_DURATION).tags["error.type"] == "LookupError"


def line_of(path: Path, text: str) -> str:
    lines = path.read_text().splitlines()
    return str(next(number for number, line in enumerate(lines, 1) if text in line))


@pytest.mark.parametrize(
    ("route", "file", "function", "line"),
    [
        ("/view", "why_slow_site.py", "build.<locals>.repeat_in_view", "# the line that repeats"),
        ("/helper", "why_slow_queries.py", "item_counts", "return [session.scalar("),
        ("/template", "why_slow_site.py", "build.<locals>.repeat_in_template", '"why/lazy.html"'),
    ],
)
def test_the_repeated_statement_is_located_in_application_code(
    route: str, file: str, function: str, line: str, engine: sa.Engine,
    metrics: CapturedMetrics,
) -> None:  # fmt: skip
    site(engine).test_client().get(route)
    (event,) = metrics.filter(schema.STATEMENT_REPEATS, tags={"http.route": route})
    assert event.value == SHELVES
    tags = event.tags
    assert tags["db.namespace"] == "why"
    text = tags["db.query.text"]
    assert "item.shelf_id = ?" in text or "? = item.shelf_id" in text
    assert not re.search(r"= \d|\d =", text)  # no shelf id, ever
    assert (tags["code.file.path"], tags["code.function.name"]) == (file, function)
    assert tags["code.line.number"] == line_of(HERE / file, line)
    if route == "/template":  # the lazy relationship loaded by the template's line 3
        assert (tags["template.name"], tags["template.line.number"]) == ("why/lazy.html", "3")
    else:
        assert "template.name" not in tags


def test_sampling_holds_its_bounds_under_a_10_000_request_n_plus_one_load(
    engine: sa.Engine, metrics: CapturedMetrics
) -> None:
    seconds = [0.0]
    SAMPLER.reset(clock=lambda: seconds[0])
    client = site(engine).test_client()
    requests = 10_000
    for _ in range(requests):
        seconds[0] += 0.01  # 100 requests/s: the load spans 100 s of flushes
        assert client.get("/many/2").status_code == 200
    events = metrics.filter(schema.STATEMENT_REPEATS)
    assert len(events) == 2 * requests  # every request's repeats are recorded...
    assert {e.value for e in events} == {3}
    # ...but each statement's stack is walked at most once per flush interval.
    assert SAMPLER.walks <= 2 * (requests * 0.01 / WALK_EVERY + 1)
    assert len({e.tags["db.query.text"] for e in events}) == 2


def test_at_most_k_statements_per_route_are_kept(
    engine: sa.Engine, metrics: CapturedMetrics
) -> None:
    site(engine).test_client().get(f"/many/{MAX_PER_ROUTE + 3}")
    texts = [e.tags["db.query.text"] for e in metrics.filter(schema.STATEMENT_REPEATS)]
    assert len(texts) == MAX_PER_ROUTE + 3
    assert texts.count(schema.OTHER) == 3 and len(set(texts)) == MAX_PER_ROUTE + 1


SWITCHES = {
    "BREAKDOWN": (BREAKDOWN,),
    "HTTP_CLIENT": (schema.HTTP_CLIENT_DURATION,),
    "TEMPLATES": (schema.TEMPLATE_REQUEST_DURATION,),
    "REPEATED_STATEMENTS": (schema.STATEMENT_REPEATS,),
}


@pytest.mark.parametrize("key", sorted(SWITCHES))
def test_each_part_turned_off_records_nothing(
    key: str, engine: sa.Engine, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    client = site(engine, **{key: False}).test_client()
    client.get("/nested", query_string={"upstream": upstream.url("")})
    client.get("/template")
    names = set(metrics.names())
    assert not names & set(SWITCHES[key]), names
    others = {name for other, found in SWITCHES.items() if other != key for name in found}
    assert others <= names, others - names
