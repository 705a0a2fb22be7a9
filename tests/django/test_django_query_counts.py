"""What the per-request query count includes, beside Django's own counting (docs/django.md).

``connection.execute_wrapper`` sees every statement a cursor executes (BEGIN, SAVEPOINT
included) but not the commit and rollback that Django makes through the DB-API
connection, which ``CaptureQueriesContext`` / ``assertNumQueries`` list as ``COMMIT`` and
``ROLLBACK``; and a streamed body runs after its request was recorded.
"""

from __future__ import annotations

import pytest
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_support import only

from zibrato.testing import CapturedMetrics

QUERIES = "db.client.request.queries"


@pytest.mark.django_db(transaction=True)
def test_commit_is_in_assert_num_queries_but_not_in_the_request_count(
    client: Client, metrics: CapturedMetrics
) -> None:
    with CaptureQueriesContext(connections["default"]) as captured:
        assert client.get("/atomic/").status_code == 200
    django_counts = [query["sql"] for query in captured]
    assert django_counts[-1] == "COMMIT"
    assert only(metrics, QUERIES, **{"http.route": "atomic/"}).value == len(django_counts) - 1


@pytest.mark.django_db
def test_queries_of_a_streamed_body_are_outside_the_request(
    client: Client, metrics: CapturedMetrics
) -> None:
    response = client.get("/stream-queries/")
    assert only(metrics, QUERIES, **{"http.route": "stream-queries/"}).value == 0
    assert b"".join(response.streaming_content) == b"items:0"  # the query runs now
    operations = metrics.filter("db.client.operation.duration")
    assert len(operations) == 1  # measured, as a query outside any request
