"""Tasks run eagerly, publishes inside a request, and what a hostile message header does.

Eager mode (``task_always_eager``) runs the task inside the request that sends it: the task
is recorded (no queue wait, no publish) and its queries count toward both the task and the
request. A task published for real from inside a request is counted with the request's
``http.route``. Whatever the publishing side put in the headers, the worker's hooks never
raise, and a queue wait is never negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from zibrato import Zibrato
from zibrato.framework import celery, schema
from zibrato.framework.celery import TaskInstrumentation
from zibrato.framework.task_units import BAD_STAMP, DUE_HEADER, NO_STAMP, TaskState
from zibrato.framework.units import current_unit
from zibrato.testing import CapturedMetrics, capture
from zibrato_flask import Zibrato as FlaskZibrato
from zibrato_flask import clients

TASK, NAME = schema.TASK_DURATION, schema.TASK_NAME


@pytest.fixture
def metrics() -> Iterator[CapturedMetrics]:
    with capture() as captured:
        yield captured


# The shop's tasks: one Celery app (a task name is registered once per process).
tasks = Celery("shop", broker="memory://")
shop_db = SQLAlchemy()


@tasks.task(name="shop.confirm", shared=False)
def confirm(order: int) -> int:
    for _ in range(3):  # the same statement three times: two duplicates
        shop_db.session.execute(text("SELECT 1"))
    return order


@pytest.fixture
def shop(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, Celery]]:
    """A Flask shop with Flask-SQLAlchemy and an eager Celery app in ``ZIBRATO_CELERY``."""
    monkeypatch.delenv("ZIBRATO_PUBLISH", raising=False)
    tasks.conf.task_always_eager = True
    app = Flask("shop")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", ZIBRATO_CELERY=tasks)
    shop_db.init_app(app)
    db = shop_db

    @app.route("/orders/<int:order>", methods=["POST"])
    def place(order: int) -> dict[str, Any]:
        db.session.execute(text("SELECT 2"))
        return {"confirmed": confirm.delay(order).get()}

    @app.route("/orders/<int:order>/later", methods=["POST"])
    def place_later(order: int) -> dict[str, Any]:
        confirm.delay(order)
        return {"queued": order}

    FlaskZibrato(app)
    try:
        yield app, tasks
    finally:
        celery.uninstrument(tasks)
        clients.close_all(linger=0)


def test_an_eager_task_in_a_request_counts_toward_both(
    shop: tuple[Flask, Celery], metrics: CapturedMetrics
) -> None:
    app, _ = shop
    with app.app_context():
        app.extensions["sqlalchemy"].session.execute(text("SELECT 0"))  # engines found
    metrics.clear()
    assert app.test_client().post("/orders/7").json == {"confirmed": 7}
    (task,) = metrics.filter(TASK)
    assert task.tags == {NAME: "shop.confirm", schema.TASK_OUTCOME: "success"}
    assert metrics.values(schema.DB_TASK_QUERIES) == [3]
    assert metrics.values(schema.DB_TASK_DUPLICATES) == [2]
    # The request ran one query itself and the task's three: four, three of them the same.
    assert metrics.values(schema.DB_REQUEST_QUERIES) == [4]
    assert metrics.values(schema.DB_REQUEST_DUPLICATES) == [2]
    # Eager: no queue, no message.
    for name in (
        schema.TASK_QUEUE_DURATION,
        schema.TASK_QUEUE_UNMEASURED,
        schema.TASK_PUBLISHED,
    ):
        assert name not in metrics


def test_an_eager_task_has_its_own_breakdown_and_its_queries_count_in_the_request_s(
    shop: tuple[Flask, Celery], metrics: CapturedMetrics
) -> None:
    app, _ = shop
    with app.app_context():
        app.extensions["sqlalchemy"].session.execute(text("SELECT 0"))  # engines found
    metrics.clear()
    assert app.test_client().post("/orders/9").json == {"confirmed": 9}
    parts = {e.tags[schema.COMPONENT]: e for e in metrics.filter(schema.TASK_BREAKDOWN)}
    assert set(parts) == {"db", "app"}
    assert parts["db"].tags == {NAME: "shop.confirm", schema.COMPONENT: "db"}
    (task,) = metrics.filter(TASK)
    assert sum(e.value for e in parts.values()) == pytest.approx(task.value, abs=1e-9)
    # The request's own breakdown counts the task's queries as its db time too.
    request_parts = {e.tags[schema.COMPONENT]: e.value for e in metrics.filter(schema.BREAKDOWN)}
    assert request_parts["db"] >= parts["db"].value
    (request,) = metrics.filter(schema.REQUEST_DURATION)
    assert sum(request_parts.values()) == pytest.approx(request.value, abs=1e-9)


def test_a_task_without_a_component_is_all_app_and_breakdown_off_records_none(
    metrics: CapturedMetrics,
) -> None:
    app = Celery("plain", broker="memory://")
    app.conf.task_always_eager = True
    client = Zibrato(publish="inproc://zibrato-celery-breakdown")

    @app.task(name="plain.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    try:
        celery.instrument(app, client=client)
        add.delay(1, 2)
        ((part, run),) = [
            (e, r) for e in metrics.filter(schema.TASK_BREAKDOWN) for r in metrics.filter(TASK)
        ]
        assert part.tags == {NAME: "plain.add", schema.COMPONENT: "app"}
        assert part.value == run.value
        celery.uninstrument(app)
        metrics.clear()
        celery.instrument(app, client=client, breakdown=False)
        add.delay(1, 2)
        assert len(metrics.filter(TASK)) == 1
        assert schema.TASK_BREAKDOWN not in metrics
    finally:
        celery.uninstrument(app)
        client.close()


def test_a_task_published_in_a_request_is_counted_with_its_route(
    shop: tuple[Flask, Celery], metrics: CapturedMetrics
) -> None:
    app, _ = shop
    tasks.conf.task_always_eager = False  # sent for real, to the in-memory transport
    assert app.test_client().post("/orders/8/later").json == {"queued": 8}
    (event,) = metrics.filter(schema.TASK_PUBLISHED)
    assert event.tags == {NAME: "shop.confirm", "http.route": "/orders/<int:order>/later"}
    assert event.value == 1
    assert TASK not in metrics  # nothing ran here


def test_instrument_is_once_per_app_and_filtered_to_it(metrics: CapturedMetrics) -> None:
    ours, theirs = Celery("ours", broker="memory://"), Celery("theirs", broker="memory://")
    for app in (ours, theirs):
        app.conf.task_always_eager = True
    client = Zibrato(publish="inproc://zibrato-celery-test")
    first = celery.instrument(ours, client=client)
    try:
        assert celery.instrument(ours) is first

        @ours.task(name="ours.ping", shared=False)
        def ping() -> str:
            return "pong"

        @theirs.task(name="theirs.ping", shared=False)
        def other_ping() -> str:
            return "pong"

        ping.delay()
        other_ping.delay()
        assert [e.tags[NAME] for e in metrics.filter(TASK)] == ["ours.ping"]
    finally:
        celery.uninstrument(ours)
        client.close()
    ping.delay()
    assert len(metrics.filter(TASK)) == 1  # no longer measured


def test_an_app_not_instrumented_here_is_not_stamped_by_one_that_is(
    metrics: CapturedMetrics,
) -> None:
    """Only ``ours`` is instrumented. What ``theirs`` publishes carries no stamp and is not
    counted, even a name nobody registers; what ``ours`` publishes is, unknown or not."""
    from celery import signals

    ours, theirs = Celery("ours", broker="memory://"), Celery("theirs", broker="memory://")
    ours.task(name="ours.ping", shared=False)(_nothing)
    theirs.task(name="theirs.ping", shared=False)(_nothing)
    seen: list[tuple[str, bool]] = []

    def look(sender: object = None, headers: Any = None, properties: Any = None, **_: Any) -> None:
        reply_to = properties.get("reply_to") if isinstance(properties, dict) else None
        seen.append(("ours" if reply_to == ours.thread_oid else "theirs", DUE_HEADER in headers))

    client = Zibrato(publish="inproc://zibrato-celery-test")
    celery.instrument(ours, client=client)
    signals.before_task_publish.connect(look, weak=False, dispatch_uid="look")
    try:
        theirs.send_task("theirs.ping")
        theirs.send_task("nobody.knows")
        ours.send_task("ours.ping")
        ours.send_task("nobody.knows")
    finally:
        signals.before_task_publish.disconnect(look, dispatch_uid="look")
        celery.uninstrument(ours)
        client.close()
    assert seen == [("theirs", False), ("theirs", False), ("ours", True), ("ours", True)]
    published = [e.tags[NAME] for e in metrics.filter(schema.TASK_PUBLISHED)]
    assert published == ["ours.ping", "_OTHER"]


def test_a_failing_client_never_raises_into_the_task() -> None:
    app = Celery("broken", broker="memory://")
    app.conf.task_always_eager = True

    def no_client() -> Zibrato:
        raise RuntimeError("no client today")

    celery.instrument(app, client=no_client)
    try:

        @app.task(name="broken.add", shared=False)
        def add(x: int, y: int) -> int:
            return x + y

        assert add.delay(2, 3).get() == 5
    finally:
        celery.uninstrument(app)


# -- the stamp: whatever a message carries ------------------------------------------------
def _nothing() -> None:
    pass


@given(
    due=st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.text(max_size=20),
        st.sampled_from(["²", "٣", "1e308", True, [], {}, b"x", "x" * 100_000]),
    )
)
def test_any_stamp_gives_a_wait_of_zero_or_more_or_a_reason(due: object) -> None:
    """``task_prerun`` as a worker sends it, the message's stamp being ``due``."""
    app = Celery("stamps", broker="memory://")
    instrumentation = TaskInstrumentation(
        app, client=None, level="info", db_level="info", namespace=None, clock=lambda: 1e6
    )
    task = app.tasks[app.task(name="stamps.task", shared=False)(_nothing).name]
    task.request_stack.push(SimpleNamespace(is_eager=False, **{DUE_HEADER: due}))
    instrumentation.task_started(sender=task, task_id="t1")  # type: ignore[arg-type]
    task.request_stack.pop()
    state = current_unit.get()
    assert isinstance(state, TaskState)
    current_unit.reset(state.token)
    if state.waited is None:
        assert state.unmeasured == (NO_STAMP if due is None else BAD_STAMP)
    else:
        assert state.unmeasured is None
        assert math.isfinite(state.waited) and state.waited >= 0


@pytest.mark.parametrize(
    ("eta", "due"),
    [
        (None, 100.0),  # published at 100
        ("1970-01-01T00:03:20+00:00", 200.0),  # due at its ETA, later than now
        ("1970-01-01T00:03:20", 200.0),  # a naive ETA is UTC, as Celery reads it
        ("1970-01-01T00:00:50+00:00", 100.0),  # an ETA in the past: due now
        ("not a date", 100.0),
        (12, 100.0),
    ],
)
def test_the_stamp_is_the_publish_time_or_a_later_eta(eta: object, due: float) -> None:
    instrumentation = TaskInstrumentation(
        Celery("stamps"), client=None, level="info", db_level="info", namespace=None,
        clock=lambda: 100.0,
    )  # fmt: skip
    headers: dict[str, Any] = {"eta": eta}
    instrumentation.stamp(headers)
    assert headers[DUE_HEADER] == due
