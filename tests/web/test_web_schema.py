"""The framework-free web schema (``zibrato.framework.schema`` and ``.units``).

Both adapters are tested through their frameworks (``tests/django``, ``tests/flask``, and
``tests/django/test_django_flask_agree.py`` for the two side by side); these tests pin the
shared rules themselves, with whatever values a caller or a peer could feed them.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zibrato.client import Zibrato
from zibrato.framework import schema
from zibrato.framework.queries import QueryTally
from zibrato.framework.units import RequestRecorder, RequestState
from zibrato.protocol import MAX_TAG_LENGTH
from zibrato.publisher import Publisher
from zibrato.testing import capture


def test_the_error_rule() -> None:
    tags = schema.TagCache()
    ok = tags.request("r", "GET", "200 OK", None, False)
    assert schema.ERROR_TYPE not in ok.request and ok.error is None
    answered = tags.request("r", "GET", 404, None, False)  # Http404 / abort(404): no error
    assert schema.ERROR_TYPE not in answered.request and answered.error is None
    server = tags.request("r", "GET", 503, None, False)  # a 5xx without an exception
    assert server.request[schema.ERROR_TYPE] == "503" and server.error is None
    assert schema.ERROR_TYPE not in server.view
    raised = tags.request("r", "GET", 418, "Teapot", True)  # an error handler answered
    assert raised.request[schema.ERROR_TYPE] == raised.view[schema.ERROR_TYPE] == "Teapot"
    assert raised.error == {schema.ROUTE: "r", schema.ERROR_TYPE: "Teapot"}
    hook = tags.request("r", "GET", 500, "LookupError", False)  # not the view's
    assert schema.ERROR_TYPE not in hook.view and hook.request[schema.ERROR_TYPE] == "LookupError"
    escaped = tags.request("r", "GET", None, "ValueError", True)  # propagated: a 500
    assert escaped.request[schema.STATUS] == "500"


@given(
    route=st.text(max_size=400),
    method=st.text(max_size=20),
    status=st.one_of(st.none(), st.integers(100, 599), st.text(max_size=20)),
    error=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    view_failed=st.booleans(),
)
def test_any_request_gets_bounded_tags(
    route: str, method: str, status: int | str | None, error: str | None, view_failed: bool
) -> None:
    tags = schema.TagCache(limit=3)
    for _ in range(2):  # built, then cached (or built again past the limit)
        found = tags.request(route, method, status, error, view_failed)
        assert len(found.request[schema.ROUTE]) <= MAX_TAG_LENGTH
        assert found.request[schema.METHOD] in schema.KNOWN_METHODS | {schema.OTHER}
        assert len(found.request.get(schema.STATUS, "")) <= 3
        assert (found.error is None) == (error is None)
        assert found.db.database("x" * 300)[schema.DB_NAMESPACE] == "x" * MAX_TAG_LENGTH


def test_operation_tags_survive_any_statement_object() -> None:
    tags = schema.TagCache()
    assert tags.operation("db", ["not", "hashable"])[schema.DB_OPERATION] == schema.OTHER
    assert tags.operation("db", "  select 1")[schema.DB_OPERATION] == "SELECT"
    for n in range(schema.MAX_CACHED_STATEMENTS + 5):  # the statement cache starts again
        assert tags.operation("db", f"UPDATE t SET x = {n}")[schema.DB_OPERATION] == "UPDATE"


@given(st.lists(st.one_of(st.sampled_from(["SELECT 1", "SELECT 2"]), st.binary()), max_size=20))
def test_only_repeated_text_is_a_duplicate(statements: list[object]) -> None:
    tally = QueryTally()
    for statement in statements:
        tally.add("db", statement, 0.001)
    texts = [s for s in statements if isinstance(s, str)]
    assert (tally.queries, tally.duplicates) == (len(statements), len(texts) - len(set(texts)))


def test_a_full_buffer_loses_no_event_uncounted(dead_address: str) -> None:
    client = Zibrato(publisher=Publisher(dead_address, buffer_size=3))
    try:
        with capture() as metrics:
            recorder = RequestRecorder(client, tags=schema.TagCache(), namespace="default")
            for _ in range(20):
                state = RequestState()
                state.view = 0.001
                # 6 events: timers, zero queries, and the breakdown's app time
                recorder.record(state, "GET", 0.002)
            kept = len(metrics.events)
        assert kept + metrics.dropped.get("buffer_full", 0) == 120
        assert metrics.dropped.get("buffer_full", 0) > 0
    finally:
        client.close(0)
