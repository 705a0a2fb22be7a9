"""The Flask tests' shop app (every kind of route a test needs) and assertion helpers.

Imported by the test modules (``from flask_support import ...``); the fixtures that use it
are in this folder's ``conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, abort, stream_with_context

from zibrato.testing import CapturedMetrics, RecordedEvent

MakeApp = Callable[..., Flask]


class Teapot(Exception):
    """Raised by a view; the app's error handler answers 418."""


def build_shop(config: dict[str, Any] | None = None) -> Flask:
    """Return the test app, uninstrumented: every kind of route a test needs."""
    app = Flask("shop")
    app.config.update(config or {})

    @app.route("/items/<int:pk>", methods=["GET", "POST"])
    def item(pk: int) -> dict[str, int]:
        return {"pk": pk}

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("the view failed")

    @app.route("/teapot")
    def teapot() -> str:
        raise Teapot()

    @app.errorhandler(Teapot)
    def handle_teapot(exc: Teapot) -> tuple[str, int]:
        return "I'm a teapot", 418

    @app.route("/forbidden")
    def forbidden() -> str:
        abort(403)

    @app.route("/stream")
    def stream() -> Response:
        def body() -> Iterator[str]:
            yield "one,"
            time.sleep(0.05)
            yield "two"

        return Response(stream_with_context(body()), mimetype="text/plain")

    @app.route("/health")
    def health() -> str:
        return "ok"

    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @shop.route("/orders/<order_id>")
    def order(order_id: str) -> dict[str, str]:
        return {"order": order_id}

    app.register_blueprint(shop)
    return app


def only(metrics: CapturedMetrics, name: str, **tags: str) -> RecordedEvent:
    """Return the one event called ``name`` (carrying ``tags``); fail if not exactly one."""
    events = metrics.filter(name, tags=tags or None)
    assert len(events) == 1, f"expected one {name} {tags}, got {events}"
    return events[0]
