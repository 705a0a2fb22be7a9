"""Where a Django request's time goes: the breakdown on views that nest the components,
the cache (locmem, database, file, Redis), templates (Django's and Jinja2), outgoing
HTTP, and the repeated statement with the line that issues it (a view, a helper module,
a template tag, a lazy queryset in a template). Each part turned off records nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from django_support import only
from redis_support import redis_server
from upstream_support import Upstream, upstream_server

from zibrato.framework import schema
from zibrato.framework.statements import SAMPLER
from zibrato.testing import CapturedMetrics

pytestmark = pytest.mark.django_db

BREAKDOWN = schema.BREAKDOWN


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with upstream_server() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_statements() -> Iterator[None]:
    SAMPLER.reset()  # every statement is walked afresh in each test
    yield
    SAMPLER.reset()


def parts(metrics: CapturedMetrics, route: str) -> dict[str, float]:
    return {
        e.tags["component"]: e.value for e in metrics.filter(BREAKDOWN, tags={"http.route": route})
    }


def test_the_parts_of_a_nested_view_add_up_to_the_request(
    client: Client, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    from djtest.why_slow import APP_MS, UPSTREAM_MS

    response = client.get("/why/nested/", {"upstream": upstream.url("")})
    assert response.status_code == 200 and b"hello" in response.content
    request = only(metrics, schema.REQUEST_DURATION).value
    found = parts(metrics, "why/nested/")
    assert set(found) == {"app", "db", "http.client", "cache", "template"}
    assert sum(found.values()) == pytest.approx(request, rel=0.01)
    # The query ran while the template rendered: db, not template; the busy tag: template.
    assert 0.030 <= found["db"] < 0.030 + 0.015
    assert 0.025 <= found["template"] < 0.025 + 0.015
    # The value computed with an HTTP call, for the cache: http.client.
    assert UPSTREAM_MS / 1000 <= found["http.client"] < UPSTREAM_MS / 1000 + 0.030
    assert found["app"] >= APP_MS / 1000
    assert found["cache"] < 0.005
    template = only(metrics, schema.TEMPLATE_REQUEST_DURATION)
    assert template.tags["template.name"] == "djtest/nested.html"
    assert template.tags["http.route"] == "why/nested/"
    assert template.value >= found["template"] + found["db"]  # inclusive: what ran inside
    call = only(metrics, schema.HTTP_CLIENT_DURATION)
    assert (
        call.tags["zibrato.route"] == "why/nested/" and call.tags["server.address"] == "127.0.0.1"
    )
    assert "http.route" not in call.tags


@pytest.fixture
def database_cache() -> None:
    call_command("createcachetable", "djtest_cache", database="default", verbosity=0)


@pytest.mark.parametrize("alias", ["default", "db", "files"])
def test_cache_calls_hits_and_misses_per_alias(
    alias: str, client: Client, metrics: CapturedMetrics, database_cache: None
) -> None:
    answer = client.get("/why/cached/", {"alias": alias}).json()
    # A cached None is a hit and comes back as None; a miss gives the caller's default.
    assert answer == {"first": None, "none": None, "absent": "default", "many": {"k": None}}
    check_cache_metrics(metrics, alias)


def check_cache_metrics(metrics: CapturedMetrics, alias: str) -> None:
    tags = {"http.route": "why/cached/", "cache.alias": alias}
    assert only(metrics, schema.CACHE_REQUEST_CALLS, **tags).value == 6
    assert only(metrics, schema.CACHE_REQUEST_HITS, **tags).value == 2
    assert only(metrics, schema.CACHE_REQUEST_MISSES, **tags).value == 4
    spent = only(metrics, schema.CACHE_REQUEST_DURATION, **tags).value
    found = parts(metrics, "why/cached/")
    # The cache calls' whole time; the database cache's queries are db in the breakdown.
    assert 0 < found["cache"] <= spent <= found["cache"] + found.get("db", 0) + 1e-6
    assert ("db" in found) == (alias == "db")


def test_a_real_redis_cache_is_measured_like_the_others(
    client: Client, metrics: CapturedMetrics, tmp_path: Path
) -> None:
    with redis_server(tmp_path) as redis:
        caches = {
            **settings.CACHES,
            "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                      "LOCATION": redis.url},
        }  # fmt: skip
        with override_settings(CACHES=caches):
            answer = client.get("/why/cached/", {"alias": "redis"}).json()
    assert answer["absent"] == "default" and answer["none"] is None
    check_cache_metrics(metrics, "redis")


def test_django_and_jinja2_templates_are_timed_by_name(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    client.get("/why/tag/")
    client.get("/why/jinja/")
    django_template = only(metrics, schema.TEMPLATE_REQUEST_DURATION, **{"http.route": "why/tag/"})
    assert django_template.tags["template.name"] == "djtest/tag_per_row.html"
    jinja = only(metrics, schema.TEMPLATE_REQUEST_DURATION, **{"http.route": "why/jinja/"})
    assert jinja.tags["template.name"] == "djtest/page.html"
    assert parts(metrics, "why/jinja/")["db"] > 0  # its queries ran while it rendered


def test_an_outgoing_call_that_fails_carries_its_status(
    client: Client, upstream: Upstream, metrics: CapturedMetrics
) -> None:
    client.get("/why/upstream/", {"upstream": upstream.url(""), "status": "502"})
    call = only(metrics, schema.HTTP_CLIENT_DURATION)
    assert (call.tags["http.response.status_code"], call.tags["error.type"]) == ("502", "502")
    assert call.tags["server.port"] == str(upstream.port)


def repeated(metrics: CapturedMetrics, route: str) -> list[Any]:
    return metrics.filter(schema.STATEMENT_REPEATS, tags={"http.route": route})


def line_of(path: Path, text: str) -> str:
    lines = path.read_text().splitlines()
    return str(next(number for number, line in enumerate(lines, 1) if text in line))


SITE = Path(__file__).parent / "djtest"


@pytest.mark.parametrize(
    ("route", "file", "function", "line"),
    [
        ("why/view/", "djtest/why_slow.py", "repeat_in_view", "# the line that repeats"),
        ("why/helper/", "djtest/catalogue.py", "item_counts", "return [shelf.items.count()"),
        ("why/tag/", "djtest/templatetags/djtest_tags.py", "shelf_size", "return shelf.items"),
    ],
)
def test_the_repeated_statement_is_located_in_application_code(
    route: str, file: str, function: str, line: str, client: Client, shelves: list[int],
    metrics: CapturedMetrics,
) -> None:  # fmt: skip
    client.get("/" + route)
    (event,) = repeated(metrics, route)
    assert event.type == "distribution" and event.value == 3  # three shelves, one query each
    tags = event.tags
    assert re.fullmatch(r"SELECT COUNT\(\*\) AS __count FROM djtest_item WHERE "
                        r"djtest_item\.shelf_id = \?", tags["db.query.text"]), tags  # fmt: skip
    assert tags["db.namespace"] == "default"
    assert (tags["code.file.path"], tags["code.function.name"]) == (file, function)
    assert tags["code.line.number"] == line_of(SITE.parent / file, line)
    if route == "why/tag/":
        assert tags["template.name"] == "djtest/tag_per_row.html"
        assert tags["template.line.number"] == "2"
    else:
        assert "template.name" not in tags


def test_a_lazy_queryset_in_a_template_names_the_template_and_its_line(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    client.get("/why/template/")
    (event,) = repeated(metrics, "why/template/")
    tags = event.tags
    assert (tags["code.file.path"], tags["code.function.name"]) == (
        "djtest/why_slow.py",
        "repeat_in_template",
    )
    assert tags["code.line.number"] == line_of(SITE / "why_slow.py", '"djtest/lazy_rows.html"')
    assert (tags["template.name"], tags["template.line.number"]) == ("djtest/lazy_rows.html", "3")


def test_no_parameter_value_leaves_the_process(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    client.get("/why/view/")
    (event,) = repeated(metrics, "why/view/")
    for shelf in shelves:
        assert f"= {shelf}" not in event.tags["db.query.text"]


SWITCHES = {
    "BREAKDOWN": (BREAKDOWN,),
    "HTTP_CLIENT": (schema.HTTP_CLIENT_DURATION,),
    "CACHE": (schema.CACHE_REQUEST_CALLS, schema.CACHE_REQUEST_DURATION),
    "TEMPLATES": (schema.TEMPLATE_REQUEST_DURATION,),
    "REPEATED_STATEMENTS": (schema.STATEMENT_REPEATS,),
}


@pytest.mark.parametrize("key", sorted(SWITCHES))
def test_each_part_turned_off_records_nothing(
    key: str, client: Client, upstream: Upstream, shelves: list[int], metrics: CapturedMetrics
) -> None:
    with override_settings(ZIBRATO={**settings.ZIBRATO, key: False}):
        client.get("/why/nested/", {"upstream": upstream.url("")})
        client.get("/why/template/")
    names = set(metrics.names())
    assert not names & set(SWITCHES[key]), names
    assert schema.REQUEST_DURATION in names
    others = {name for other, found in SWITCHES.items() if other != key for name in found}
    assert others <= names, others - names
    if key == "BREAKDOWN":
        return
    found = parts(metrics, "why/nested/")
    component = {"HTTP_CLIENT": "http.client", "CACHE": "cache", "TEMPLATES": "template"}
    if key in component:  # its time is the app's now
        assert component[key] not in found
