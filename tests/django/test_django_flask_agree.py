"""One schema for both adapters: the same requests give the same metrics in Django and Flask.

Each scenario is served by the Django test site and by a Flask app written to match it;
what each framework records is reduced to what the schema promises (every tag but the
route, whose spelling is each framework's own template syntax, which is checked on its
own) and the two must be equal. Both have a database and run no query here, so the
per-request database metrics (0 for the default namespace) are compared too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from django.test import Client
from flask import Flask, Response, abort, request

from zibrato.framework import schema
from zibrato.testing import CapturedMetrics, RecordedEvent
from zibrato_flask import Zibrato, clients

pytestmark = pytest.mark.django_db(databases=["default", "other"])


class Scenario(NamedTuple):
    method: str
    django_path: str
    django_route: str
    flask_path: str
    flask_route: str


SCENARIOS = {
    "ok": Scenario("GET", "/", "djtest.views.home", "/", "/"),
    "head": Scenario("HEAD", "/", "djtest.views.home", "/", "/"),
    "no route": Scenario("GET", "/no/such/", "<unmatched>", "/no/such", "<unmatched>"),
    "404 answer": Scenario("GET", "/missing/", "missing/", "/missing", "/missing"),
    "403 answer": Scenario("GET", "/denied/", "denied/", "/denied", "/denied"),
    "400 answer": Scenario("GET", "/suspicious/", "suspicious/", "/suspicious", "/suspicious"),
    "view raises": Scenario("GET", "/boom/", "boom/", "/boom", "/boom"),
    "5xx response": Scenario(
        "GET", "/unavailable/", "unavailable/", "/unavailable", "/unavailable"
    ),
    "a hook raises": Scenario("GET", "/fail/after/", "fail/after/", "/fail/after", "/fail/after"),
}
# Django's 405 comes from the view (a decorator): it runs; Flask's comes from routing.
METHOD_NOT_ALLOWED = Scenario("POST", "/get-only/", "get-only/", "/get-only", "/get-only")


def flask_site() -> Flask:
    """The Django test site's scenarios, the Flask way."""
    app = Flask("agree")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.logger.disabled = True

    @app.route("/")
    def home() -> str:
        return "home"

    @app.route("/missing")
    def missing() -> str:
        abort(404)

    @app.route("/denied")
    def denied() -> str:
        abort(403)

    @app.route("/suspicious")
    def suspicious() -> str:
        abort(400)

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("boom")

    @app.route("/unavailable")
    def unavailable() -> tuple[str, int]:
        return "try later", 503

    @app.route("/fail/after")
    def fail_after() -> str:
        return "home"

    @app.route("/get-only")
    def get_only() -> str:
        return "got"

    @app.after_request
    def failing(response: Response) -> Response:
        if request.path == "/fail/after":
            raise LookupError("the hook failed")
        return response

    return app


@pytest.fixture
def flask_app() -> Iterator[Flask]:
    app = flask_site()
    engine = sa.create_engine("sqlite://")
    Zibrato(app).instrument_engine(engine, namespace="default")  # Django's alias
    yield app
    engine.dispose()
    clients.close_all(linger=0)


def what_was_recorded(metrics: CapturedMetrics, route: str) -> dict[str, Any]:
    """The schema's events of one request, the route checked and left out."""

    def reduced(event: RecordedEvent) -> tuple[Any, ...]:
        assert event.tags.get(schema.ROUTE, route) == route, event
        tags = {k: v for k, v in event.tags.items() if k != schema.ROUTE}
        value = event.value if event.name.startswith("db.") or event.type == "counter" else "t"
        return (event.level, event.type, value, sorted(tags.items()))

    names = (
        schema.REQUEST_DURATION,
        schema.VIEW_DURATION,
        schema.EXCEPTIONS,
        schema.DB_REQUEST_QUERIES,
    )
    names += (schema.DB_REQUEST_DURATION, schema.DB_REQUEST_DUPLICATES)
    return {name: sorted(reduced(e) for e in metrics.filter(name)) for name in names}


def run_django(scenario: Scenario, metrics: CapturedMetrics) -> dict[str, Any]:
    metrics.clear()
    Client(raise_request_exception=False).generic(scenario.method, scenario.django_path)
    return what_was_recorded(metrics, scenario.django_route)


def run_flask(app: Flask, scenario: Scenario, metrics: CapturedMetrics) -> dict[str, Any]:
    metrics.clear()
    app.test_client().open(scenario.flask_path, method=scenario.method)
    return what_was_recorded(metrics, scenario.flask_route)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_django_and_flask_record_the_same(
    name: str, flask_app: Flask, metrics: CapturedMetrics
) -> None:
    scenario = SCENARIOS[name]
    django, flask = run_django(scenario, metrics), run_flask(flask_app, scenario, metrics)
    assert django == flask
    assert len(django[schema.REQUEST_DURATION]) == 1
    assert django[schema.DB_REQUEST_QUERIES], "0 queries recorded for the default namespace"


def test_a_405_is_tagged_alike(flask_app: Flask, metrics: CapturedMetrics) -> None:
    django = run_django(METHOD_NOT_ALLOWED, metrics)
    flask = run_flask(flask_app, METHOD_NOT_ALLOWED, metrics)
    assert django[schema.REQUEST_DURATION] == flask[schema.REQUEST_DURATION]
    assert len(django[schema.VIEW_DURATION]) == 1 and flask[schema.VIEW_DURATION] == []
