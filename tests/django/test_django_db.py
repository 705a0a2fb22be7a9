"""Per-request database metrics: counts equal what Django itself captures, per alias."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from django.db import connections
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from django_support import only
from hypothesis import given
from hypothesis import strategies as st

from zibrato.framework.schema import KNOWN_OPERATIONS, OTHER, operation_name
from zibrato.framework.units import RequestState
from zibrato.testing import CapturedMetrics

pytestmark = pytest.mark.django_db(databases=["default", "other"])

QUERIES = "db.client.request.queries"
DB_TIME = "db.client.request.duration"
DUPLICATES = "db.client.request.duplicates"
OPERATION = "db.client.operation.duration"


def test_request_counts_equal_capture_queries_context(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    with CaptureQueriesContext(connections["default"]) as captured:
        client.get("/items/")
    assert len(captured) == 2
    queries = only(metrics, QUERIES)
    assert (queries.type, queries.level, queries.value) == ("distribution", "info", 2)
    assert queries.tags["http.route"] == "items/"
    assert queries.tags["db.namespace"] == "default"
    db_time = only(metrics, DB_TIME)
    assert (
        db_time.type == "timer"
        and 0 < db_time.value < only(metrics, "http.server.request.duration").value
    )
    assert only(metrics, DUPLICATES).value == 0
    operations = metrics.filter(OPERATION)
    assert [(e.level, e.tags["db.operation.name"], e.tags["db.namespace"]) for e in operations] == [
        ("debug", "SELECT", "default")
    ] * 2
    assert sum(e.value for e in operations) == pytest.approx(db_time.value)


def test_second_alias_is_its_own_namespace(client: Client, metrics: CapturedMetrics) -> None:
    with CaptureQueriesContext(connections["other"]) as other:
        client.get("/notes/")
    assert len(other) == 1
    assert only(metrics, QUERIES, **{"db.namespace": "other"}).value == 1
    assert only(metrics, DB_TIME, **{"db.namespace": "other"}).value > 0
    assert not metrics.filter(QUERIES, tags={"db.namespace": "default"})


def test_async_view_queries_made_through_sync_to_async_are_counted(
    shelves: list[int], metrics: CapturedMetrics
) -> None:
    with CaptureQueriesContext(connections["default"]) as captured:
        async_to_sync(AsyncClient().get)("/async/items/")
    assert only(metrics, QUERIES).value == len(captured) == 2


def test_duplicates_are_the_n_plus_one_signal(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    with CaptureQueriesContext(connections["default"]) as captured:
        client.get("/shelves/")
    # One query for the shelves, then the same statement once per shelf (3): 2 repeats.
    assert len(captured) == 4
    assert only(metrics, QUERIES).value == 4
    duplicates = only(metrics, DUPLICATES)
    assert (duplicates.type, duplicates.value) == ("distribution", 2)
    assert duplicates.tags["http.route"] == "shelves/"


def test_executemany_is_one_query(client: Client, metrics: CapturedMetrics) -> None:
    with CaptureQueriesContext(connections["default"]) as captured:
        client.get("/bulk/")
    assert len(captured) == 1
    assert only(metrics, QUERIES).value == 1
    assert only(metrics, OPERATION).tags["db.operation.name"] == "INSERT"


def test_request_without_queries_records_zero(client: Client, metrics: CapturedMetrics) -> None:
    client.get("/")
    assert only(metrics, QUERIES).value == 0
    assert only(metrics, DUPLICATES).value == 0


def test_queries_outside_a_request_record_only_the_operation(
    metrics: CapturedMetrics,
) -> None:
    from djtest.models import Note, Shelf

    Shelf.objects.count()
    list(Note.objects.all())
    assert not metrics.filter(QUERIES) and not metrics.filter(DUPLICATES)
    operations = metrics.filter(OPERATION)
    assert sorted(e.tags["db.namespace"] for e in operations) == ["default", "other"]
    assert "http.route" not in operations[0].tags


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_concurrent_requests_in_threads_keep_their_own_tallies(
    shelves: list[int], metrics: CapturedMetrics
) -> None:
    errors: list[BaseException] = []

    def hit(path: str, times: int) -> None:
        try:
            client = Client()
            for _ in range(times):
                assert client.get(path).status_code == 200
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=hit, args=(path, 15))
        for path in ("/items/", "/shelves/", "/", "/items/", "/shelves/")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    by_route = Counter(
        (e.tags["http.route"], e.value)
        for e in metrics.filter(QUERIES, tags={"db.namespace": "default"})
    )
    assert by_route == {("items/", 2): 30, ("shelves/", 4): 30, ("djtest.views.home", 0): 15}


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("SELECT 1", "SELECT"),
        ("  (SELECT 1) UNION (SELECT 2)", "SELECT"),
        ('insert into "t" values (1)', "INSERT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH"),
        ("", "_OTHER"),
        ("frobnicate everything", "_OTHER"),
        (b"SELECT 1", "_OTHER"),
        (None, "_OTHER"),
    ],
)
def test_operation_names_are_bounded(sql: object, name: str) -> None:
    assert operation_name(sql) == name


def test_connections_that_exist_before_the_app_is_ready_get_the_hook(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    from zibrato_django.db import install_on_existing, measure_query

    connection = connections["default"]
    connection.execute_wrappers.remove(measure_query)  # as if it predated ready()
    try:
        client.get("/items/")
        assert only(metrics, QUERIES).value == 0  # unseen without the hook
        assert not metrics.filter(OPERATION)
        install_on_existing()
        assert connection.execute_wrappers.count(measure_query) == 1
        install_on_existing()  # idempotent
        assert connection.execute_wrappers.count(measure_query) == 1
    finally:
        if measure_query not in connection.execute_wrappers:
            connection.execute_wrappers.append(measure_query)
    metrics.clear()
    client.get("/items/")
    assert only(metrics, QUERIES).value == 2


@given(st.one_of(st.text(), st.binary(), st.none(), st.integers()))
def test_any_statement_gives_a_known_operation_name(sql: object) -> None:
    assert operation_name(sql) in KNOWN_OPERATIONS | {OTHER}


@given(st.lists(st.sampled_from(["SELECT 1", "SELECT 2", "INSERT x", b"raw"]), max_size=30))
def test_duplicates_are_the_queries_whose_text_ran_before(statements: list[object]) -> None:
    state = RequestState()
    for sql in statements:
        state.add_query("default", sql, 0.001)
    tally = state.tally
    texts = [sql for sql in statements if isinstance(sql, str)]
    assert (tally.duplicates if tally else 0) == len(texts) - len(set(texts))
    assert (tally.queries if tally else 0) == len(statements)
