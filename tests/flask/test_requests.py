"""Request metrics (issue 7 item 2): every metric and tag, errors, streaming, exclusions."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask, Response, abort, stream_with_context
from flask_support import MakeApp, only

from zibrato.framework import schema
from zibrato.testing import CapturedMetrics

REQUEST = schema.REQUEST_DURATION
VIEW = schema.VIEW_DURATION


def test_route_template_method_and_status(make_app: MakeApp, metrics: CapturedMetrics) -> None:
    response = make_app().test_client().get("/items/7")
    assert response.json == {"pk": 7}
    request = only(metrics, REQUEST)
    assert request.type == "timer" and request.level == "info" and request.value > 0
    assert request.tags == {
        "http.route": "/items/<int:pk>",
        "http.request.method": "GET",
        "http.response.status_code": "200",
    }
    view = only(metrics, VIEW)
    assert view.tags == {"http.route": "/items/<int:pk>", "http.request.method": "GET"}
    assert 0 < view.value <= request.value
    assert metrics.filter(schema.EXCEPTIONS) == []


def test_blueprint_routes_carry_their_prefix(make_app: MakeApp, metrics: CapturedMetrics) -> None:
    assert make_app().test_client().get("/shop/orders/abc-1").json == {"order": "abc-1"}
    assert only(metrics, REQUEST).tags["http.route"] == "/shop/orders/<order_id>"
    assert only(metrics, VIEW).tags["http.route"] == "/shop/orders/<order_id>"


@pytest.mark.parametrize(
    ("method", "path", "method_tag"),
    [("GET", "/no/such/page-42", "GET"), ("PROPFIND", "/secret-path", "_OTHER")],
)
def test_unmatched_requests_never_tag_the_raw_path(
    make_app: MakeApp, metrics: CapturedMetrics, method: str, path: str, method_tag: str
) -> None:
    response = make_app().test_client().open(path, method=method)
    assert response.status_code == 404
    assert only(metrics, REQUEST).tags == {
        "http.route": "<unmatched>",
        "http.request.method": method_tag,
        "http.response.status_code": "404",
    }
    assert metrics.filter(VIEW) == [], "no view ran"
    assert not any(path in str(event.tags) for event in metrics.events)


@pytest.mark.parametrize(("method", "method_tag"), [("DELETE", "DELETE"), ("BREW", "_OTHER")])
def test_a_405_is_tagged_with_the_rule_that_matched_its_path(
    make_app: MakeApp, metrics: CapturedMetrics, method: str, method_tag: str
) -> None:
    # As in Django, where a 405 comes from the view of the pattern that matched.
    response = make_app().test_client().open("/items/9", method=method)
    assert response.status_code == 405
    assert only(metrics, REQUEST).tags == {
        "http.route": "/items/<int:pk>",
        "http.request.method": method_tag,
        "http.response.status_code": "405",
    }
    assert metrics.filter(VIEW) == [], "no view ran"


def test_a_raising_view_records_error_type_and_counts_the_exception(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    bare = make_app(zibrato=False, PROPAGATE_EXCEPTIONS=False).test_client().get("/boom")
    response = make_app(PROPAGATE_EXCEPTIONS=False).test_client().get("/boom")
    assert (
        (response.status_code, response.data) == (bare.status_code, bare.data) == (500, bare.data)
    )
    request = only(metrics, REQUEST)
    assert request.tags["error.type"] == "ValueError"
    assert request.tags["http.response.status_code"] == "500"
    assert only(metrics, VIEW).tags["error.type"] == "ValueError"
    exceptions = only(metrics, schema.EXCEPTIONS)
    assert (exceptions.type, exceptions.level, exceptions.value) == ("counter", "error", 1)
    assert exceptions.tags == {"http.route": "/boom", "error.type": "ValueError"}


def test_a_propagated_exception_reaches_the_caller_unchanged(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    with pytest.raises(ValueError, match="the view failed"):
        make_app().test_client().get("/boom")  # TESTING: Flask re-raises
    request = only(metrics, REQUEST)
    assert request.tags["error.type"] == "ValueError"
    assert request.tags["http.response.status_code"] == "500"


def test_an_error_handler_response_still_counts_the_exception(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    response = make_app().test_client().get("/teapot")
    assert (response.status_code, response.data) == (418, b"I'm a teapot")
    request = only(metrics, REQUEST)
    assert request.tags["error.type"] == "Teapot"
    assert request.tags["http.response.status_code"] == "418"
    assert only(metrics, schema.EXCEPTIONS).tags == {
        "http.route": "/teapot",
        "error.type": "Teapot",
    }


def test_an_http_answer_below_500_is_not_an_error(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    assert make_app().test_client().get("/forbidden").status_code == 403
    request = only(metrics, REQUEST)
    assert request.tags["http.response.status_code"] == "403"
    assert "error.type" not in request.tags
    assert metrics.filter(schema.EXCEPTIONS) == []
    assert "error.type" not in only(metrics, VIEW).tags


@pytest.mark.parametrize(("path", "status"), [("/answers/404", "404"), ("/answers/400", "400")])
def test_flasks_own_answers_below_500_are_no_errors(
    make_app: MakeApp, metrics: CapturedMetrics, path: str, status: str
) -> None:
    app = make_app()

    @app.route("/answers/<int:code>")
    def answer(code: int) -> str:
        abort(code)

    assert str(app.test_client().get(path).status_code) == status
    request = only(metrics, REQUEST)
    assert request.tags["http.route"] == "/answers/<int:code>"
    assert request.tags["http.response.status_code"] == status
    assert "error.type" not in request.tags and "error.type" not in only(metrics, VIEW).tags
    assert metrics.filter(schema.EXCEPTIONS) == []


def test_an_http_exception_of_500_is_an_error(make_app: MakeApp, metrics: CapturedMetrics) -> None:
    app = make_app()

    @app.route("/unavailable")
    def unavailable() -> str:
        abort(503)

    assert app.test_client().get("/unavailable").status_code == 503
    request = only(metrics, REQUEST)
    assert request.tags["error.type"] == only(metrics, VIEW).tags["error.type"]
    assert request.tags["error.type"] == "ServiceUnavailable"
    assert only(metrics, schema.EXCEPTIONS).tags["error.type"] == "ServiceUnavailable"


def test_a_5xx_response_without_an_exception_carries_its_status_as_error_type(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    app = make_app()

    @app.route("/busy")
    def busy() -> tuple[str, int]:
        return "try later", 503

    assert app.test_client().get("/busy").status_code == 503
    request = only(metrics, REQUEST)
    assert request.tags["http.response.status_code"] == request.tags["error.type"] == "503"
    assert "error.type" not in only(metrics, VIEW).tags
    assert metrics.filter(schema.EXCEPTIONS) == [], "no exception was raised"


def test_head_requests_are_measured_under_their_route(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    response = make_app().test_client().head("/items/5")
    assert (response.status_code, response.data) == (200, b"")
    assert only(metrics, REQUEST).tags == {
        "http.route": "/items/<int:pk>",
        "http.request.method": "HEAD",
        "http.response.status_code": "200",
    }
    assert only(metrics, VIEW).tags["http.request.method"] == "HEAD"


def test_request_level_setting(make_app: MakeApp, metrics: CapturedMetrics) -> None:
    make_app(ZIBRATO_REQUEST_LEVEL="warning").test_client().get("/items/1")
    assert only(metrics, REQUEST).level == only(metrics, VIEW).level == "warning"


def test_a_failing_after_request_still_records(
    make_app: MakeApp, metrics: CapturedMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    def build(zibrato: bool) -> Flask:
        app = make_app(zibrato=zibrato, PROPAGATE_EXCEPTIONS=False)

        @app.after_request
        def broken(response: Response) -> Response:
            raise RuntimeError("after_request failed")

        return app

    with caplog.at_level(logging.CRITICAL, logger="shop"):  # Flask logs the failure
        bare = build(False).test_client().get("/items/1")
        response = build(True).test_client().get("/items/1")
    assert (response.status_code, response.data) == (bare.status_code, bare.data)
    assert response.status_code == 500
    request = only(metrics, REQUEST)
    assert request.tags["error.type"] == "RuntimeError"
    assert request.tags["http.response.status_code"] == "500"
    assert "error.type" not in only(metrics, VIEW).tags, "the view itself succeeded"


def test_streaming_bodies_are_not_consumed_and_recorded_once(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    app = make_app()
    seen_by_the_body: list[int] = []

    @app.route("/counted-stream")
    def counted_stream() -> Response:
        def body() -> Iterator[str]:
            yield "one,"
            seen_by_the_body.append(len(metrics.filter(REQUEST)))
            yield "two"

        return Response(stream_with_context(body()), mimetype="text/plain")

    response = app.test_client().get("/counted-stream", buffered=False)
    assert seen_by_the_body == [], "Zibrato did not read the body"
    assert b"".join(response.response) == b"one,two"  # type: ignore[arg-type]
    response.close()
    # Flask tears the request down when the response starts, and again (with the
    # context pushed once more) when a stream_with_context body ends: one record.
    assert seen_by_the_body == [1]
    request = only(metrics, REQUEST)
    assert request.tags["http.route"] == "/counted-stream"
    assert only(metrics, VIEW).value <= request.value


def test_responses_are_unchanged(make_app: MakeApp, metrics: CapturedMetrics) -> None:
    bare = make_app(zibrato=False, PROPAGATE_EXCEPTIONS=False).test_client()
    instrumented = make_app(PROPAGATE_EXCEPTIONS=False).test_client()
    for method, path in [
        ("GET", "/items/3"),
        ("POST", "/items/4"),
        ("HEAD", "/items/5"),
        ("OPTIONS", "/items/6"),
        ("GET", "/missing"),
        ("PUT", "/items/3"),
        ("GET", "/boom"),
        ("GET", "/teapot"),
        ("GET", "/stream"),
        ("GET", "/shop/orders/x"),
    ]:
        expected, got = bare.open(path, method=method), instrumented.open(path, method=method)
        assert (got.status, got.headers, got.data) == (
            expected.status,
            expected.headers,
            expected.data,
        )
    assert len(metrics.filter(REQUEST)) == 10


def test_excluded_paths_record_nothing(make_app: MakeApp, metrics: CapturedMetrics) -> None:
    client = make_app(ZIBRATO_EXCLUDE_PATHS=["/health", "/shop/"]).test_client()
    assert client.get("/health").data == b"ok"
    assert client.get("/shop/orders/1").status_code == 200
    assert metrics.events == []
    client.get("/items/1")
    assert only(metrics, REQUEST).tags["http.route"] == "/items/<int:pk>"


def test_level_threshold_drops_request_timers_but_keeps_errors(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    client = make_app(ZIBRATO_LEVEL="warning", PROPAGATE_EXCEPTIONS=False).test_client()
    client.get("/items/1")
    client.get("/boom")
    assert metrics.filter(REQUEST) == [] and metrics.filter(VIEW) == []
    assert only(metrics, schema.EXCEPTIONS).tags["error.type"] == "ValueError"


def test_source_and_tags_from_the_config(make_app: MakeApp, metrics: CapturedMetrics) -> None:
    app = make_app(ZIBRATO_SOURCE="web-1", ZIBRATO_TAGS={"app": "shop"})
    app.test_client().get("/items/1")
    request = only(metrics, REQUEST)
    assert request.source == "web-1"
    assert request.tags["app"] == "shop" and request.tags["http.route"] == "/items/<int:pk>"


def test_broker_down_changes_nothing(make_app: MakeApp, dead_address: str) -> None:
    app = make_app(ZIBRATO_PUBLISH=dead_address)
    client = app.test_client()
    for pk in range(50):
        assert client.get(f"/items/{pk}").json == {"pk": pk}
    assert app.extensions["zibrato"].client().stats()["dropped"] == {}


class BrokenTags:
    """Stands for a bug inside Zibrato: every lookup fails."""

    def request(self, *args: object) -> None:
        raise RuntimeError("a bug in zibrato")


def test_a_failure_inside_zibrato_never_reaches_the_request(
    make_app: MakeApp, metrics: CapturedMetrics
) -> None:
    app = make_app()
    app.extensions["zibrato"].tags = BrokenTags()
    client = app.test_client()
    for pk in range(3):
        assert client.get(f"/items/{pk}").json == {"pk": pk}
    assert metrics.filter(REQUEST) == []
    assert metrics.dropped == {"flask_hook_failed": 3}
