"""The blog's own fixtures, plus what the Zibrato test reads: each test's outcome, the
responses it saw, the queries it ran, and the threads and sockets alive after it.

``BLOG_REPORT`` names the JSON file written at the end of the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from blog import Post, User, create_app, db
from flask import Flask
from flask.testing import FlaskClient

OBSERVED: dict[str, dict[str, Any]] = {}
CURRENT: dict[str, Any] = {}


class RecordingClient(FlaskClient):
    """A test client that notes every response's status, headers and body."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        headers = sorted(
            (k, v) for k, v in response.headers.items() if k not in ("Set-Cookie", "Date")
        )
        digest = hashlib.sha256(response.get_data()).hexdigest()
        CURRENT.setdefault("responses", []).append([response.status, headers, digest])
        return response


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'b.db'}"})
    app.test_client_class = RecordingClient
    with app.app_context():
        db.create_all()
        db.session.add_all([User(id=1, name="ada"), User(id=2, name="bob")])
        db.session.add_all([Post(author_id=1, title="first"), Post(author_id=2, title="second")])
        db.session.commit()
        engine = db.engine

    def count(*args: Any) -> None:
        CURRENT["queries"] = CURRENT.get("queries", 0) + 1

    sa.event.listen(engine, "before_cursor_execute", count)
    yield app
    sa.event.remove(engine, "before_cursor_execute", count)
    engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.fixture(autouse=True)
def observe(request: pytest.FixtureRequest) -> Iterator[None]:
    CURRENT.clear()
    yield
    OBSERVED.setdefault(request.node.nodeid, {}).update(
        {
            "responses": CURRENT.get("responses", []),
            "queries": CURRENT.get("queries", 0),
            "threads": threading.active_count(),
            "tasks": len(os.listdir("/proc/self/task")),
            "sockets": sockets(),
        }
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        OBSERVED.setdefault(report.nodeid, {})[f"outcome_{report.when}"] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("BLOG_REPORT")
    if path:
        Path(path).write_text(json.dumps(OBSERVED, indent=1), encoding="utf-8")
