"""Every metric and tag of a task, through a real Celery worker of each pool, on Redis.

The worker is a Django project's (``taskapp``: ``zibrato_django`` installed,
``ZIBRATO["CELERY"]`` set): its tasks are measured through that one setting, their queries
too. The prefork worker's children each exit after one task (``--max-tasks-per-child=1``,
through ``os._exit``): every event of every task arrives all the same, none lost and none
twice. The test process publishes with a clock :data:`PRODUCER_SKEW` seconds behind, so a
queue wait it stamped reads that much longer, while the ETA of a countdown and the stamp a
retry's republish gets in the worker do not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import taskapp
from celery_support import (
    POOLS,
    PRODUCER_SKEW,
    BrokerAddresses,
    celery_env,
    start_beat,
    start_worker,
    stop,
    terminate,
    wait_until,
)
from process_support import SiteProcess
from redis_support import RedisServer
from upstream_support import upstream_server

from zibrato import Zibrato
from zibrato.framework import celery, schema

DURATION, OUTCOMES, QUEUE = schema.TASK_DURATION, schema.TASK_OUTCOMES, schema.TASK_QUEUE_DURATION
NAME, OUTCOME = schema.TASK_NAME, schema.TASK_OUTCOME
EVENTS_TIMEOUT = 30.0


def of(collector: object, name: str, source: str, **tags: str) -> list[object]:
    """The events called ``name`` from ``source`` that carry ``tags``."""
    return [
        event
        for event in collector.received  # type: ignore[attr-defined]
        if event.name == name
        and event.source == source
        and all(event.tags.get(key) == value for key, value in tags.items())
    ]


def tally(collector: object, name: str, source: str, *keys: str) -> dict[tuple[str, ...], float]:
    """Sum the values of ``name`` from ``source`` by the values of the tags ``keys``."""
    found: dict[tuple[str, ...], float] = {}
    for event in of(collector, name, source):
        key = tuple(event.tags.get(k, "") for k in keys)  # type: ignore[attr-defined]
        found[key] = found.get(key, 0) + event.value  # type: ignore[attr-defined]
    return found


def count(collector: object, name: str, source: str, *keys: str) -> dict[tuple[str, ...], int]:
    """Count the events of ``name`` from ``source`` by the values of the tags ``keys``."""
    found: dict[tuple[str, ...], int] = {}
    for event in of(collector, name, source):
        key = tuple(event.tags.get(k, "") for k in keys)  # type: ignore[attr-defined]
        found[key] = found.get(key, 0) + 1
    return found


def send_every_outcome(queue: str) -> None:
    taskapp.add.apply_async((1, 2), queue=queue)
    taskapp.add.apply_async((2, 3), queue=queue, countdown=1)  # due at its ETA
    taskapp.fail.apply_async(queue=queue)
    taskapp.ignore.apply_async(queue=queue)
    taskapp.reject.apply_async(queue=queue)
    taskapp.retry_once.apply_async((0.5,), queue=queue)  # republished in the worker
    taskapp.n_plus_one.apply_async(queue=queue)
    taskapp.n_plus_one.apply_async((True,), queue=queue)
    taskapp.add.apply_async((0, 0), queue=queue, expires=-1)  # expired: revoked, never runs
    taskapp.app.send_task("taskapp.no_such_task", queue=queue)  # no worker knows it


RAN = {  # (task, outcome, error.type) -> how many ran so
    ("taskapp.add", "success", ""): 2,
    ("taskapp.retry_once", "success", ""): 1,
    ("taskapp.n_plus_one", "success", ""): 2,
    ("taskapp.fail", "failure", "ValueError"): 1,
    ("taskapp.ignore", "ignored", ""): 1,
    ("taskapp.reject", "rejected", ""): 1,
    ("taskapp.retry_once", "retry", ""): 1,
}
NEVER_RAN = {("taskapp.add", "revoked", ""): 1, ("_OTHER", "unknown", ""): 1}


@pytest.mark.parametrize("pool", POOLS)
def test_every_outcome_and_metric_through_a_real_worker(
    pool: str,
    workers: dict[str, SiteProcess],
    producer: Zibrato,
    subscribe: Callable[..., object],
) -> None:
    collector = subscribe()
    source = f"worker-{pool}"
    send_every_outcome(f"q-{pool}")
    producer.flush()
    keys = (NAME, OUTCOME, "error.type")
    collector.wait_for(  # type: ignore[attr-defined]
        lambda got: (
            count(collector, DURATION, source, *keys) == RAN
            and tally(collector, OUTCOMES, source, *keys) == {**RAN, **NEVER_RAN}
            and len(of(collector, QUEUE, source)) == sum(RAN.values())
            and len(of(collector, schema.DB_TASK_QUERIES, source)) == sum(RAN.values())
        ),
        f"every task's events from {source}",
        EVENTS_TIMEOUT,
    )
    collector.settle(quiet=0.3)  # type: ignore[attr-defined]
    # Nothing arrives twice, nothing was dropped on the way.
    assert len(of(collector, DURATION, source)) == sum(RAN.values())
    assert not of(collector, "zibrato.publisher.dropped", source)

    # Queue waits: the producer's stamps read PRODUCER_SKEW longer; the ETA's and the
    # retry's (stamped by the worker's clock, due at its countdown) do not. Never negative.
    waits = sorted(event.value for event in of(collector, QUEUE, source))  # type: ignore[attr-defined]
    assert all(wait >= 0 for wait in waits)
    assert len([w for w in waits if PRODUCER_SKEW - 1 < w < PRODUCER_SKEW + 15]) == 7, waits
    assert len([w for w in waits if w < PRODUCER_SKEW / 3]) == 2, waits
    assert {e.tags[NAME] for e in of(collector, QUEUE, source) if e.value < PRODUCER_SKEW / 3} == {  # type: ignore[attr-defined]
        "taskapp.add",
        "taskapp.retry_once",
    }

    # The N+1 inside a task is found like one inside a view; other tasks count 0 queries.
    queries = tally(collector, schema.DB_TASK_QUERIES, source, NAME, schema.DB_NAMESPACE)
    assert queries[("taskapp.n_plus_one", "default")] == taskapp.N_PLUS_ONE + 1
    assert queries[("taskapp.add", "default")] == 0
    duplicates = sorted(
        e.value  # type: ignore[attr-defined]
        for e in of(collector, schema.DB_TASK_DUPLICATES, source, **{NAME: "taskapp.n_plus_one"})
    )
    assert duplicates == [0, taskapp.N_PLUS_ONE - 1]
    assert of(collector, schema.DB_TASK_DURATION, source, **{NAME: "taskapp.n_plus_one"})

    # Publishing: the producer counts what it sent, per name (unregistered: _OTHER); the
    # retry's republish is counted by the worker, inside the task that retried.
    collector.wait_for(  # type: ignore[attr-defined]
        lambda got: sum(tally(collector, schema.TASK_PUBLISHED, "producer", NAME).values()) >= 10,
        "the producer's published counters",
        EVENTS_TIMEOUT,
    )
    published = tally(collector, schema.TASK_PUBLISHED, "producer", NAME)
    assert published[("taskapp.add",)] >= 3 and published[("_OTHER",)] >= 1
    assert tally(collector, schema.TASK_PUBLISHED, source, NAME) == {("taskapp.retry_once",): 1}


@pytest.mark.parametrize("pool", POOLS)
def test_where_a_task_spends_its_time_through_a_real_worker(
    pool: str,
    workers: dict[str, SiteProcess],
    producer: Zibrato,
    subscribe: Callable[..., object],
) -> None:
    """``celery.task.breakdown``: each component the task used, and ``app`` the rest,
    adding up to its duration; its outgoing call tagged with the task's name."""
    collector = subscribe()
    source, task = f"worker-{pool}", {NAME: "taskapp.where_time_goes"}
    with upstream_server() as upstream:
        taskapp.where_time_goes.apply_async(
            (upstream.url(f"/delay?ms={CALL_MS}"),), queue=f"q-{pool}"
        )
        producer.flush()
        collector.wait_for(  # type: ignore[attr-defined]
            lambda got: (
                of(collector, DURATION, source, **task)
                and of(collector, schema.HTTP_CLIENT_DURATION, source, **task)
                and len(of(collector, schema.TASK_BREAKDOWN, source, **task)) == 5
            ),
            f"the task's breakdown from {source}",
            EVENTS_TIMEOUT,
        )
    parts = {
        event.tags[schema.COMPONENT]: event.value  # type: ignore[attr-defined]
        for event in of(collector, schema.TASK_BREAKDOWN, source, **task)
    }
    assert set(parts) == {"db", "http.client", "cache", "template", "app"}
    assert all(seconds > 0 for seconds in parts.values()), parts
    assert parts["http.client"] >= CALL_MS / 1000
    assert parts["app"] >= taskapp.APP_SECONDS
    (duration,) = of(collector, DURATION, source, **task)
    assert sum(parts.values()) == pytest.approx(duration.value, abs=1e-9)  # type: ignore[attr-defined]
    (call,) = of(collector, schema.HTTP_CLIENT_DURATION, source, **task)
    assert call.tags == {  # type: ignore[attr-defined]
        **task,
        schema.SERVER_ADDRESS: "127.0.0.1",
        schema.SERVER_PORT: str(upstream.port),
        schema.METHOD: "GET",
        schema.STATUS: "200",
    }
    assert call.value >= CALL_MS / 1000  # type: ignore[attr-defined]


CALL_MS = 80  # how long the loopback server takes to answer the task's outgoing call


def test_a_hard_time_limit_counts_a_failure_from_the_main_process(
    workers: dict[str, SiteProcess], producer: Zibrato, subscribe: Callable[..., object]
) -> None:
    """The child is killed with its buffer; the main process counts the outcome."""
    collector = subscribe()
    taskapp.sleep.apply_async((10,), queue="q-prefork", time_limit=0.5)
    producer.flush()
    collector.wait_for(  # type: ignore[attr-defined]
        lambda got: of(
            collector, OUTCOMES, "worker-prefork", **{NAME: "taskapp.sleep", OUTCOME: "failure"}
        ),
        "the time limit's outcome",
        EVENTS_TIMEOUT,
    )
    collector.wait_for(  # type: ignore[attr-defined]
        lambda got: of(collector, DURATION, "worker-prefork", **{NAME: "taskapp.sleep"}),
        "the killed task's run time",
        EVENTS_TIMEOUT,
    )
    collector.settle(quiet=0.5)  # type: ignore[attr-defined]
    # One outcome (Celery reports a hard time limit twice), the main process's; the run
    # time from the child, which saw the SIGTERM that stopped it.
    (outcome,) = of(collector, OUTCOMES, "worker-prefork", **{NAME: "taskapp.sleep"})
    assert outcome.tags["error.type"] == "TimeLimitExceeded"  # type: ignore[attr-defined]
    (duration,) = of(collector, DURATION, "worker-prefork", **{NAME: "taskapp.sleep"})
    assert duration.tags["error.type"] == "SystemExit"  # type: ignore[attr-defined]
    assert 0.5 <= duration.value < 10  # type: ignore[attr-defined]


def test_a_producer_without_zibrato_stamps_nothing_and_that_is_counted(
    workers: dict[str, SiteProcess], producer: Zibrato, subscribe: Callable[..., object]
) -> None:
    collector = subscribe()
    celery.uninstrument(taskapp.app)  # as if Zibrato were not installed where it publishes
    try:
        taskapp.add.apply_async((1, 1), queue="q-solo")
    finally:
        celery.instrument(taskapp.app, client=producer)
    collector.wait_for(  # type: ignore[attr-defined]
        lambda got: of(collector, schema.TASK_QUEUE_UNMEASURED, "worker-solo"),
        "the unmeasured queue wait",
        EVENTS_TIMEOUT,
    )
    (event,) = of(collector, schema.TASK_QUEUE_UNMEASURED, "worker-solo")
    assert event.tags == {NAME: "taskapp.add", "reason": "no_stamp"}  # type: ignore[attr-defined]
    collector.settle(quiet=0.2)  # type: ignore[attr-defined]
    assert not of(collector, QUEUE, "worker-solo")


def test_sigterm_mid_task_lets_it_finish_and_loses_nothing(
    redis: RedisServer,
    broker: BrokerAddresses,
    producer: Zibrato,
    subscribe: Callable[..., object],
    tmp_path: Path,
) -> None:
    """A warm shutdown: the task running when SIGTERM comes finishes, and its events go
    out before its prefork child and the worker exit; no process is left behind."""
    collector = subscribe()
    env = celery_env(redis.url, broker.frontend, "worker-sigterm")
    worker = start_worker(
        env, pool="prefork", queue="q-sigterm", concurrency=1, extra=("--max-tasks-per-child=1",)
    )
    try:
        started = tmp_path / "started"
        taskapp.sleep.apply_async((1.0, str(started)), queue="q-sigterm")
        assert wait_until(started.exists, EVENTS_TIMEOUT), worker
        terminate(worker)
        assert worker.finish(EVENTS_TIMEOUT) == 0, worker
    finally:
        stop(worker)
    collector.wait_for(  # type: ignore[attr-defined]
        lambda got: of(collector, DURATION, "worker-sigterm"), "the task's duration", 10.0
    )
    (event,) = of(collector, DURATION, "worker-sigterm")
    assert event.tags == {NAME: "taskapp.sleep", OUTCOME: "success"}  # type: ignore[attr-defined]
    assert event.value >= 1.0  # type: ignore[attr-defined]


def test_beat_counts_what_it_publishes(
    redis: RedisServer, broker: BrokerAddresses, subscribe: Callable[..., object], tmp_path: Path
) -> None:
    collector = subscribe()
    env = celery_env(redis.url, broker.frontend, "beat", TASKAPP_BEAT_QUEUE="q-beat")
    beat = start_beat(env, tmp_path / "schedule")
    try:
        collector.wait_for(  # type: ignore[attr-defined]
            lambda got: sum(tally(collector, schema.TASK_PUBLISHED, "beat", NAME).values()) >= 2,
            "beat's published counters",
            EVENTS_TIMEOUT,
        )
    finally:
        stop(beat)
    assert set(tally(collector, schema.TASK_PUBLISHED, "beat", NAME)) == {("taskapp.add",)}
