"""Responses and exceptions are the same, byte for byte, with and without the middleware."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core.signals import got_request_exception
from django.test import Client, override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from zibrato.framework.schema import KNOWN_METHODS, UNMATCHED_ROUTE
from zibrato.framework.schema import OTHER as OTHER_METHOD
from zibrato.testing import CapturedMetrics
from zibrato_django.conf import MIDDLEWARE_PATH

pytestmark = pytest.mark.django_db(databases=["default", "other"])

WITHOUT = [m for m in settings.MIDDLEWARE if m != MIDDLEWARE_PATH]
ROUTES = {
    *(str(pattern.pattern) for pattern in __import__("djtest.urls").urls.urlpatterns),
    "shop/<str:region>/shelves/<slug:slug>/",
}


def snapshot(method: str, path: str) -> tuple[Any, ...]:
    """Everything a user could see of one request: status, headers, body, exception."""
    client = Client(raise_request_exception=False)
    signals: list[str] = []

    def receiver(sender: object, **kwargs: object) -> None:
        signals.append("got_request_exception")

    got_request_exception.connect(receiver)
    try:
        response = client.generic(method, path)
    finally:
        got_request_exception.disconnect(receiver)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    exc = response.exc_info[1] if getattr(response, "exc_info", None) else None
    return (
        response.status_code,
        response.reason_phrase,
        sorted(response.items()),
        sorted((k, v.OutputString()) for k, v in response.cookies.items()),
        body,
        type(exc).__name__ if exc else None,
        exc.args if exc else None,
        signals,
    )


@pytest.mark.parametrize(
    "path",
    ["/no/such/page/", "/items/424242/", "/denied/", "/boom/", "/stream/", "/early/", "/"],
)
def test_responses_are_identical_without_the_middleware(path: str) -> None:
    with_zibrato = snapshot("GET", path)
    with override_settings(MIDDLEWARE=WITHOUT):
        without = snapshot("GET", path)
    assert with_zibrato == without


def test_the_very_exception_object_reaches_the_caller() -> None:
    raised: list[BaseException] = []

    def receiver(sender: object, request: object, **kwargs: object) -> None:
        import sys

        raised.append(sys.exc_info()[1])  # type: ignore[arg-type]

    got_request_exception.connect(receiver)
    try:
        with pytest.raises(ValueError) as caught:
            Client().get("/boom/")
    finally:
        got_request_exception.disconnect(receiver)
    assert raised == [caught.value]


paths = st.one_of(
    st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=40),
    st.sampled_from(["/items/1/", "/shop/x/shelves/y/", "/items/abc/", "//", "/%00", "/.."]),
).map(lambda text: "/" + text.lstrip("/"))
methods = st.one_of(st.sampled_from(sorted(KNOWN_METHODS)), st.from_regex(r"\A[A-Z]{1,12}\Z"))


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(method=methods, path=paths)
def test_any_request_gives_a_bounded_route_and_the_same_response(
    zibrato_metrics: CapturedMetrics, method: str, path: str
) -> None:
    zibrato_metrics.clear()
    with_zibrato = snapshot(method, path)
    events = zibrato_metrics.filter("http.server.request.duration")
    with override_settings(MIDDLEWARE=WITHOUT):
        without = snapshot(method, path)
    assert with_zibrato[:5] == without[:5]
    if path.startswith("/health"):
        assert events == []
        return
    (event,) = events
    route = event.tags["http.route"]
    assert route in ROUTES or route == UNMATCHED_ROUTE or route == "djtest.views.home"
    assert event.tags["http.request.method"] in KNOWN_METHODS | {OTHER_METHOD}
