"""What callers feed the adapter, fuzzed: request lines and settings (hypothesis)."""

from __future__ import annotations

from typing import Any

from flask_support import build_shop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zibrato.errors import ConfigError
from zibrato.framework import schema
from zibrato.framework.queries import QueryTally
from zibrato.testing import capture
from zibrato_flask import Zibrato
from zibrato_flask.settings import DEFAULTS

ROUTES = {"/items/<int:pk>", "/shop/orders/<order_id>", "/boom", "/teapot", "/forbidden"}
ROUTES |= {"/stream", "/health", "/static/<path:filename>", schema.UNMATCHED_ROUTE}

methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12),
)
paths = st.one_of(
    st.sampled_from(["/items/1", "/items/-1", "/shop/orders/x", "/boom", "/teapot", "/stream"]),
    # a "?" would start the query string, which the test passes on its own; "//" would
    # start a host name, which the test client tries to encode
    st.text(max_size=40).map(lambda text: "/" + text.replace("?", "%3F").lstrip("/")),
    st.builds(lambda n: f"/items/{n}", st.integers()),
)
no_db = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@no_db
@given(method=methods, path=paths, query=st.text(max_size=20))
def test_any_request_gets_the_bare_apps_answer_and_bounded_tags(
    method: str, path: str, query: str
) -> None:
    config = {"PROPAGATE_EXCEPTIONS": False}
    bare, instrumented = build_shop(config), build_shop(config)
    bare.logger.disabled = instrumented.logger.disabled = True
    Zibrato(instrumented)
    with capture() as metrics:
        expected = bare.test_client().open(path, method=method, query_string=query)
        got = instrumented.test_client().open(path, method=method, query_string=query)
        assert (got.status, got.data) == (expected.status, expected.data)
        (request,) = metrics.filter(schema.REQUEST_DURATION)
    assert request.tags[schema.ROUTE] in ROUTES
    assert request.tags[schema.METHOD] in schema.KNOWN_METHODS | {schema.OTHER}
    assert request.tags[schema.STATUS] == str(got.status_code)
    assert metrics.dropped == {}


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers()), max_size=3),
    st.lists(
        st.dictionaries(st.sampled_from(["kind", "path", "level", "KIND"]), st.text(max_size=8))
    ),
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(DEFAULTS)), value=values)
def test_any_setting_is_accepted_or_one_clear_error(key: str, value: Any) -> None:
    app = build_shop({key: value})
    try:
        Zibrato(app)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(key) and "\n" not in message
        assert "zibrato" not in app.extensions
    else:
        assert "zibrato" in app.extensions


@given(statement=st.text(max_size=60))
def test_any_sql_text_gets_a_bounded_operation_name(statement: str) -> None:
    assert schema.operation_name(statement) in schema.KNOWN_OPERATIONS | {schema.OTHER}
    tally = QueryTally()
    tally.add("db", statement, 0.001)
    tally.add("db", statement, 0.001)
    assert (tally.queries, tally.duplicates) == (2, 1)
