"""SQLAlchemy (issue 7 item 3): per-request queries, DB time, duplicates, the operation timer.

Real SQLite files through Flask-SQLAlchemy (two binds) and through a plain engine; the
expected counts come from SQLAlchemy's own ``before_cursor_execute`` event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import click
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from flask_support import build_shop, only
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.serving import make_server

from zibrato.framework import schema
from zibrato.testing import CapturedMetrics
from zibrato_flask import Zibrato, database

QUERIES, DB_TIME = schema.DB_REQUEST_QUERIES, schema.DB_REQUEST_DURATION
DUPLICATES, OPERATION = schema.DB_REQUEST_DUPLICATES, schema.DB_OPERATION_DURATION


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Author(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Book(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "book"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int]
    title: Mapped[str]


class Event(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "event"
    __bind_key__ = "archive"
    id: Mapped[int] = mapped_column(primary_key=True)
    what: Mapped[str]


class StatementCounter:
    """SQLAlchemy's own count of cursor executions on an engine: the reference."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self.count_one)

    def count_one(self, *args: Any) -> None:
        self.count += 1


def library_app(tmp_path: Path, *, zibrato_first: bool = False) -> tuple[Flask, SQLAlchemy]:
    """The shop app plus a library on SQLite (bind ``archive`` in a second file)."""
    app = build_shop(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'library.db'}",
            "SQLALCHEMY_BINDS": {"archive": f"sqlite:///{tmp_path / 'archive.db'}"},
        }
    )
    if zibrato_first:
        Zibrato(app)
        db.init_app(app)
    else:
        db.init_app(app)
        Zibrato(app)

    @app.route("/authors")
    def authors() -> dict[str, list[str]]:
        # The N+1 pattern: one query for the authors, then one per author.
        result = {}
        for author in db.session.scalars(sa.select(Author).order_by(Author.id)):
            titles = db.session.scalars(sa.select(Book.title).where(Book.author_id == author.id))
            result[author.name] = list(titles)
        return {"authors": list(result)}

    @app.route("/queries/<int:n>")
    def queries(n: int) -> str:
        for _ in range(n):
            db.session.execute(sa.text("SELECT 1"))
        return str(n)

    @app.route("/archive", methods=["POST"])
    def archive() -> str:
        db.session.add(Event(what="archived"))
        db.session.commit()
        db.session.execute(sa.select(Author.id).limit(1))
        return "ok"

    @app.route("/bad-sql")
    def bad_sql() -> str:
        db.session.execute(sa.text("SELECT * FROM no_such_table"))
        return "unreachable"

    @app.cli.command("count-authors")
    def count_authors() -> None:
        click.echo(db.session.scalar(sa.select(sa.func.count(Author.id))))

    with app.app_context():
        db.create_all()
        db.session.add_all([Author(id=i, name=f"author-{i}") for i in range(1, 5)])
        db.session.add_all([Book(author_id=i, title=f"book-{i}") for i in range(1, 5)])
        db.session.commit()
    return app, db


@pytest.fixture
def library(tmp_path: Path, metrics: CapturedMetrics) -> Iterator[tuple[Flask, SQLAlchemy]]:
    app, db = library_app(tmp_path)
    yield app, db
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


def engines(app: Flask, db: SQLAlchemy) -> dict[str | None, sa.Engine]:
    with app.app_context():
        return dict(db.engines)


def test_queries_time_and_duplicates_per_request(
    library: tuple[Flask, SQLAlchemy], metrics: CapturedMetrics
) -> None:
    app, db = library
    reference = StatementCounter(engines(app, db)[None])
    metrics.clear()  # the setup's queries
    assert app.test_client().get("/authors").json == {
        "authors": ["author-1", "author-2", "author-3", "author-4"]
    }
    tags = {"http.route": "/authors", "db.namespace": "library.db"}
    queries = only(metrics, QUERIES)
    assert (queries.type, queries.level, queries.tags) == ("distribution", "info", tags)
    assert queries.value == reference.count == 5
    db_time = only(metrics, DB_TIME)
    assert db_time.tags == tags and 0 < db_time.value < only(metrics, schema.REQUEST_DURATION).value
    duplicates = only(metrics, DUPLICATES)
    assert duplicates.tags == {"http.route": "/authors"}
    assert duplicates.value == 3, "the per-author query ran 4 times: 3 repeats"


def test_each_query_is_an_operation_at_debug(
    library: tuple[Flask, SQLAlchemy], metrics: CapturedMetrics
) -> None:
    app, _ = library
    metrics.clear()
    app.test_client().post("/archive")
    operations = metrics.filter(OPERATION)
    assert {event.level for event in operations} == {"debug"}
    assert {(e.tags["db.namespace"], e.tags["db.operation.name"]) for e in operations} == {
        ("archive", "INSERT"),
        ("library.db", "SELECT"),
    }
    assert sum(event.value for event in operations) == pytest.approx(
        sum(event.value for event in metrics.filter(DB_TIME))
    )
    # one series per bind, each with its own count
    counts = {e.tags["db.namespace"]: e.value for e in metrics.filter(QUERIES)}
    assert counts == {"archive": 1, "library.db": 1}


def test_the_level_threshold_drops_the_operation_timer(
    tmp_path: Path, metrics: CapturedMetrics
) -> None:
    app = build_shop({"ZIBRATO_LEVEL": "info"})
    Zibrato(app).instrument_engine(engine := sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}"))

    @app.route("/one")
    def one() -> str:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return "1"

    app.test_client().get("/one")
    assert metrics.filter(OPERATION) == []
    assert only(metrics, QUERIES).value == 1
    engine.dispose()


def test_engines_are_found_when_zibrato_is_initialised_first(
    tmp_path: Path, metrics: CapturedMetrics
) -> None:
    app, db = library_app(tmp_path, zibrato_first=True)
    metrics.clear()
    app.test_client().get("/queries/3")
    assert only(metrics, QUERIES).value == 3
    with app.app_context():
        db.engines[None].dispose()


def test_concurrent_requests_count_only_their_own_queries(
    library: tuple[Flask, SQLAlchemy], metrics: CapturedMetrics
) -> None:
    app, _ = library
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        wanted = [n for n in range(1, 13) for _ in range(3)]

        def fetch(n: int) -> str:
            with urlopen(f"{base}/queries/{n}", timeout=10) as response:
                return str(response.read().decode())

        metrics.clear()
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(fetch, wanted)) == [str(n) for n in wanted]
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    counts = [event.value for event in metrics.filter(QUERIES)]
    assert sorted(counts) == sorted(wanted)
    assert {event.tags["http.route"] for event in metrics.filter(QUERIES)} == {"/queries/<int:n>"}


def test_queries_outside_a_request_are_counted_without_a_route(
    library: tuple[Flask, SQLAlchemy], metrics: CapturedMetrics
) -> None:
    app, db = library
    metrics.clear()
    result = app.test_cli_runner().invoke(args=["count-authors"])
    assert result.exit_code == 0 and result.output.strip() == "4"
    assert only(metrics, QUERIES).tags == {"db.namespace": "library.db"}
    assert only(metrics, QUERIES).value == 1
    assert only(metrics, DUPLICATES).tags == {}
    metrics.clear()
    with app.app_context():
        for _ in range(2):
            db.session.execute(sa.text("SELECT 2"))
        assert metrics.filter(QUERIES) == [], "recorded when the context ends"
    assert only(metrics, QUERIES).value == 2 and only(metrics, DUPLICATES).value == 1


def test_a_request_inside_an_outer_app_context_counts_apart(
    library: tuple[Flask, SQLAlchemy], metrics: CapturedMetrics
) -> None:
    app, db = library
    metrics.clear()
    with app.app_context():  # tests often wrap requests in a context like this one
        db.session.execute(sa.text("SELECT 3"))
        app.test_client().get("/queries/2")
        app.test_client().get("/queries/4")
    by_route = sorted((e.tags.get("http.route", ""), e.value) for e in metrics.filter(QUERIES))
    assert by_route == [("", 1), ("/queries/<int:n>", 2), ("/queries/<int:n>", 4)]


def test_a_failing_query_is_counted_and_its_error_unchanged(
    library: tuple[Flask, SQLAlchemy], metrics: CapturedMetrics
) -> None:
    app, _ = library
    metrics.clear()
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        app.test_client().get("/bad-sql")
    assert only(metrics, QUERIES).value == 1
    assert only(metrics, schema.REQUEST_DURATION).tags["error.type"] == "OperationalError"
    app.test_client().get("/queries/1")
    assert [e.value for e in metrics.filter(QUERIES)] == [1, 1], "no leftover start time"


def test_a_plain_engine_takes_one_call(tmp_path: Path, metrics: CapturedMetrics) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    other = sa.create_engine("sqlite://")
    app = build_shop()
    zibrato = Zibrato(app)
    zibrato.instrument_engine(engine)
    zibrato.instrument_engine(other, namespace="cache")
    zibrato.instrument_engine(engine)  # twice is once
    reference = StatementCounter(engine)

    @app.route("/plain")
    def plain() -> str:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}])
            conn.execute(sa.text("SELECT * FROM t"))
        with other.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return "ok"

    app.test_client().get("/plain")
    counts = {e.tags["db.namespace"]: e.value for e in metrics.filter(QUERIES)}
    assert counts == {"plain.db": reference.count, "cache": 1}
    assert reference.count == 3
    engine.dispose()
    other.dispose()


def test_requests_without_queries_record_zero_for_the_default_bind(
    library: tuple[Flask, SQLAlchemy], metrics: CapturedMetrics
) -> None:
    # So that queries-per-request percentiles count the requests that ran none.
    app, _ = library
    metrics.clear()
    app.test_client().get("/items/1")
    tags = {"http.route": "/items/<int:pk>", "db.namespace": "library.db"}
    assert only(metrics, QUERIES).value == 0 and only(metrics, QUERIES).tags == tags
    assert only(metrics, DB_TIME).value == 0 and only(metrics, DB_TIME).tags == tags
    assert only(metrics, DUPLICATES).value == 0
    assert metrics.filter(OPERATION) == []


def test_a_plain_engine_is_the_default_namespace_of_its_extensions_apps(
    metrics: CapturedMetrics,
) -> None:
    engine = sa.create_engine("sqlite://")
    zibrato = Zibrato()
    app = build_shop()
    zibrato.init_app(app)
    app.test_client().get("/items/1")
    assert metrics.filter(QUERIES) == [], "no database yet: no per-request DB metrics"
    zibrato.instrument_engine(engine, namespace="cache")
    zibrato.instrument_engine(sa.create_engine("sqlite://"), namespace="second")
    app.test_client().get("/items/2")
    assert only(metrics, QUERIES).tags == {"http.route": "/items/<int:pk>", "db.namespace": "cache"}
    assert only(metrics, QUERIES).value == 0
    engine.dispose()


def test_the_db_level_setting(tmp_path: Path, metrics: CapturedMetrics) -> None:
    app = build_shop({"ZIBRATO_DB_LEVEL": "debug"})
    Zibrato(app).instrument_engine(engine := sa.create_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    app.test_client().get("/items/1")
    assert only(metrics, QUERIES).level == only(metrics, DUPLICATES).level == "debug"
    assert only(metrics, schema.REQUEST_DURATION).level == "info"
    engine.dispose()


def test_a_failure_inside_zibrato_never_reaches_the_query(
    tmp_path: Path, metrics: CapturedMetrics
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'q.db'}")
    app = build_shop()
    Zibrato(app).instrument_engine(engine)
    database._instrumented[engine].operations = None  # type: ignore[assignment]  # a bug
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 7")).scalar() == 7
    assert metrics.dropped == {"flask_hook_failed": 1}
    engine.dispose()
