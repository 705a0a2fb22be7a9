"""The request, view and exception metrics through Django's test Client and AsyncClient."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync
from django.core.signals import got_request_exception
from django.test import AsyncClient, Client, override_settings
from django_support import only, tags_of

from zibrato.framework.schema import UNMATCHED_ROUTE as UNMATCHED
from zibrato.testing import CapturedMetrics

pytestmark = pytest.mark.django_db(databases=["default", "other"])

REQUEST = "http.server.request.duration"
VIEW = "http.server.view.duration"
EXCEPTIONS = "http.server.exceptions"
KEYS = ("http.route", "http.request.method", "http.response.status_code", "error.type")


def test_request_and_view_metrics_carry_route_method_and_status(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    assert client.get(f"/items/{shelves[0]}/").status_code == 200
    request = only(metrics, REQUEST)
    assert (request.type, request.level) == ("timer", "info")
    assert tags_of(request, *KEYS) == {
        "http.route": "items/<int:pk>/",
        "http.request.method": "GET",
        "http.response.status_code": "200",
    }
    view = only(metrics, VIEW)
    assert (view.type, view.level) == ("timer", "info")
    assert tags_of(view, *KEYS) == {"http.route": "items/<int:pk>/", "http.request.method": "GET"}
    assert 0 < view.value <= request.value
    assert not metrics.filter(EXCEPTIONS)


def test_async_view_through_async_client(shelves: list[int], metrics: CapturedMetrics) -> None:
    response = async_to_sync(AsyncClient().get)("/async/items/")
    assert response.status_code == 200 and response.content.startswith(b"6 ")
    assert only(metrics, REQUEST, **{"http.route": "async/items/"}).value > 0
    assert only(metrics, VIEW, **{"http.route": "async/items/"}).value > 0


def test_class_based_view_under_its_full_route_with_include(
    client: Client, metrics: CapturedMetrics
) -> None:
    assert client.get("/shop/eu/shelves/top/").content == b"shelf top"
    route = "shop/<str:region>/shelves/<slug:slug>/"
    assert only(metrics, REQUEST, **{"http.route": route})
    assert only(metrics, VIEW, **{"http.route": route})


def test_empty_pattern_is_named_by_the_views_dotted_path(
    client: Client, metrics: CapturedMetrics
) -> None:
    client.get("/")
    assert only(metrics, REQUEST).tags["http.route"] == "djtest.views.home"


def test_unresolved_path_is_unmatched_and_never_reaches_a_view(
    client: Client, metrics: CapturedMetrics
) -> None:
    assert client.get("/no/such/path/12345/").status_code == 404
    event = only(metrics, REQUEST)
    assert tags_of(event, *KEYS) == {
        "http.route": UNMATCHED,
        "http.request.method": "GET",
        "http.response.status_code": "404",
    }
    assert not metrics.filter(VIEW)


def test_a_view_raising_http404_keeps_its_route_and_is_no_error(
    client: Client, metrics: CapturedMetrics
) -> None:
    # Http404 is Django's way of answering 404: a response, not a server error (OTel).
    assert client.get("/items/999999/").status_code == 404
    event = only(metrics, REQUEST)
    assert tags_of(event, *KEYS) == {
        "http.route": "items/<int:pk>/",
        "http.request.method": "GET",
        "http.response.status_code": "404",
    }
    assert "error.type" not in only(metrics, VIEW).tags
    assert not metrics.filter(EXCEPTIONS)


def test_raising_view_records_request_view_and_exception_with_error_type(
    metrics: CapturedMetrics,
) -> None:
    seen: list[object] = []

    def receiver(sender: object, request: object, **kwargs: object) -> None:
        seen.append(request)

    got_request_exception.connect(receiver)
    try:
        with pytest.raises(ValueError, match="boom"):
            Client().get("/boom/")
        response = Client(raise_request_exception=False).get("/boom/")
    finally:
        got_request_exception.disconnect(receiver)
    assert response.status_code == 500
    assert len(seen) == 2  # Django's own signal still fires for each
    requests = metrics.filter(REQUEST)
    assert len(requests) == 2
    for event in requests:
        assert tags_of(event, *KEYS) == {
            "http.route": "boom/",
            "http.request.method": "GET",
            "http.response.status_code": "500",
            "error.type": "ValueError",
        }
    assert [e.tags["error.type"] for e in metrics.filter(VIEW)] == ["ValueError", "ValueError"]
    exceptions = metrics.filter(EXCEPTIONS)
    assert [(e.type, e.level, e.value) for e in exceptions] == [("counter", "error", 1)] * 2
    assert tags_of(exceptions[0], "http.route", "error.type") == {
        "http.route": "boom/",
        "error.type": "ValueError",
    }


@pytest.mark.parametrize(("path", "status"), [("/denied/", "403"), ("/suspicious/", "400")])
def test_djangos_own_answers_below_500_are_no_errors(
    client: Client, metrics: CapturedMetrics, path: str, status: str
) -> None:
    # PermissionDenied and SuspiciousOperation: Django answers 403 and 400.
    assert str(client.get(path).status_code) == status
    event = only(metrics, REQUEST)
    assert event.tags["http.response.status_code"] == status
    assert "error.type" not in event.tags
    assert "error.type" not in only(metrics, VIEW).tags
    assert not metrics.filter(EXCEPTIONS)


def test_a_5xx_response_without_an_exception_carries_its_status_as_error_type(
    client: Client, metrics: CapturedMetrics
) -> None:
    assert client.get("/unavailable/").status_code == 503
    event = only(metrics, REQUEST)
    assert event.tags["http.response.status_code"] == event.tags["error.type"] == "503"
    assert "error.type" not in only(metrics, VIEW).tags
    assert not metrics.filter(EXCEPTIONS), "no exception was raised"


def test_a_later_middleware_that_raises_is_an_error_of_the_request_not_the_view(
    metrics: CapturedMetrics,
) -> None:
    response = Client(raise_request_exception=False).get("/fail/after/")
    assert response.status_code == 500
    event = only(metrics, REQUEST)
    assert tags_of(event, *KEYS) == {
        "http.route": "fail/after/",
        "http.request.method": "GET",
        "http.response.status_code": "500",
        "error.type": "LookupError",
    }
    assert "error.type" not in only(metrics, VIEW).tags, "the view itself succeeded"
    assert only(metrics, EXCEPTIONS).tags == {
        "http.route": "fail/after/",
        "error.type": "LookupError",
    }


def test_under_asgi_a_later_middleware_that_raises_is_an_error_too(
    metrics: CapturedMetrics,
) -> None:
    # Django answers it in a sync_to_async thread, which carries the request's state.
    response = async_to_sync(AsyncClient(raise_request_exception=False).get)("/fail/after/")
    assert response.status_code == 500
    assert only(metrics, REQUEST).tags["error.type"] == "LookupError"
    assert metrics.total(EXCEPTIONS, tags={"error.type": "LookupError"}) == 1


def test_an_exception_that_propagates_is_recorded_as_a_500(metrics: CapturedMetrics) -> None:
    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True), pytest.raises(ValueError):
        Client().get("/boom/")
    event = only(metrics, REQUEST)
    assert event.tags["http.response.status_code"] == "500"
    assert event.tags["error.type"] == "ValueError"
    assert metrics.total(EXCEPTIONS) == 1


def test_head_requests_are_measured_under_their_route(
    client: Client, shelves: list[int], metrics: CapturedMetrics
) -> None:
    response = client.head(f"/items/{shelves[0]}/")
    assert (response.status_code, response.content) == (200, b"")
    assert tags_of(only(metrics, REQUEST), *KEYS) == {
        "http.route": "items/<int:pk>/",
        "http.request.method": "HEAD",
        "http.response.status_code": "200",
    }
    assert only(metrics, VIEW).tags["http.request.method"] == "HEAD"


def test_a_405_from_the_view_keeps_its_route(client: Client, metrics: CapturedMetrics) -> None:
    assert client.post("/get-only/").status_code == 405
    assert tags_of(only(metrics, REQUEST), *KEYS) == {
        "http.route": "get-only/",
        "http.request.method": "POST",
        "http.response.status_code": "405",
    }


def test_view_time_excludes_the_middleware_before_it(
    client: Client, metrics: CapturedMetrics
) -> None:
    # djtest.middleware.slow_paths sleeps 30 ms, then the view sleeps 50 ms.
    client.get("/slow/view/")
    request = only(metrics, REQUEST).value
    view = only(metrics, VIEW).value
    # Sleeps may overshoot on a loaded machine; what must hold is that the view's time
    # leaves out the 30 ms spent in the middleware before it.
    assert request >= 0.080
    assert view >= 0.050
    assert request - view >= 0.030


def test_async_view_time_excludes_the_middleware_before_it(metrics: CapturedMetrics) -> None:
    async_to_sync(AsyncClient().get)("/slow/async/")
    request, view = only(metrics, REQUEST).value, only(metrics, VIEW).value
    assert request >= 0.080 and view >= 0.050 and request - view >= 0.030


def test_slow_raising_view_records_both_times_with_the_error(metrics: CapturedMetrics) -> None:
    response = Client(raise_request_exception=False).get("/slow/boom/")
    assert response.status_code == 500
    request = only(metrics, REQUEST)
    view = only(metrics, VIEW)
    assert request.value >= 0.080 and view.value >= 0.050
    assert request.value - view.value >= 0.030
    assert request.tags["error.type"] == view.tags["error.type"] == "ValueError"


def test_a_middleware_that_answers_early_records_no_view_time(
    client: Client, metrics: CapturedMetrics
) -> None:
    response = client.get("/early/")
    assert (response.status_code, response.content) == (202, b"answered by a middleware")
    event = only(metrics, REQUEST)
    assert event.tags["http.response.status_code"] == "202"
    assert not metrics.filter(VIEW)


def test_excluded_paths_record_nothing(client: Client, metrics: CapturedMetrics) -> None:
    assert client.get("/health/").content == b"ok"
    assert metrics.events == []


@pytest.mark.parametrize(
    ("method", "expected"), [("PATCH", "PATCH"), ("BREW", "_OTHER"), ("get", "GET")]
)
def test_unknown_methods_are_other(
    client: Client, metrics: CapturedMetrics, method: str, expected: str
) -> None:
    client.generic(method, "/")
    assert only(metrics, REQUEST).tags["http.request.method"] == expected


def test_streaming_response_is_timed_to_the_response_object_and_not_consumed(
    client: Client, metrics: CapturedMetrics
) -> None:
    response = client.get("/stream/")
    assert response.streaming
    assert only(metrics, REQUEST).tags["http.response.status_code"] == "200"
    assert b"".join(response.streaming_content) == b"first,second"  # still all there


def test_override_settings_changes_levels_and_exclusions(
    client: Client, metrics: CapturedMetrics
) -> None:
    from django.conf import settings

    changed = {**settings.ZIBRATO, "REQUEST_LEVEL": "warning", "EXCLUDE_PATHS": [r"^/$"]}
    with override_settings(ZIBRATO=changed):
        client.get("/")
        client.get("/health/")
    assert only(metrics, REQUEST).level == "warning"  # only /health/ is measured now
    assert only(metrics, REQUEST).tags["http.route"] == "health/"
    metrics.clear()
    client.get("/")
    assert only(metrics, REQUEST).level == "info"


def test_a_failure_inside_zibrato_never_reaches_the_request(
    client: Client,
    metrics: CapturedMetrics,
    provoked_failures: Callable[[], dict[str, int]],
) -> None:
    # djtest.middleware.sabotage breaks request.resolver_match after the view.
    for _ in range(3):
        response = client.get("/sabotage/")
        assert (response.status_code, response.content) == (200, b"home")
    assert provoked_failures() == {"django_middleware": 3}
    assert metrics.dropped == {"django_middleware": 3}
    client.get("/")
    assert only(metrics, REQUEST)  # and the next request is measured again


def test_broker_down_is_no_error(client: Client, shelves: list[int]) -> None:
    # The test site publishes to an ipc path where nobody listens (no capture here).
    for pk in shelves:
        assert client.get(f"/items/{pk}/").status_code == 200
    from zibrato_django import zibrato

    zibrato.flush(timeout=0.05)


def test_async_raising_view_records_the_error(metrics: CapturedMetrics) -> None:
    response = async_to_sync(AsyncClient(raise_request_exception=False).get)("/boom/")
    assert response.status_code == 500
    assert only(metrics, REQUEST).tags["error.type"] == "ValueError"
    assert metrics.total(EXCEPTIONS, tags={"error.type": "ValueError"}) == 1


def test_under_asgi_the_middleware_and_its_hooks_are_coroutines() -> None:
    from asgiref.sync import iscoroutinefunction

    from zibrato_django.middleware import ZibratoMiddleware

    async def get_response(request: object) -> object:
        return None

    def get_response_sync(request: object) -> object:
        return None

    native = ZibratoMiddleware(get_response)
    assert iscoroutinefunction(native)  # Django adapts nothing
    assert iscoroutinefunction(native.process_view)
    assert iscoroutinefunction(native.process_exception)
    plain = ZibratoMiddleware(get_response_sync)
    assert not iscoroutinefunction(plain) and not iscoroutinefunction(plain.process_view)
