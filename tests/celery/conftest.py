"""Fixtures of the Celery tests: a real Redis, a real zibrato broker, real workers.

The worker tests (one module) share one Redis, one broker and one worker per pool
(prefork with every child exiting after one task, threads, solo), each on a queue of its
own and with a ``SOURCE`` of its own, so tests tell their events apart; a test that stops
a worker starts its own. The test process publishes through ``taskapp.app``, instrumented with an
injected clock (:data:`PRODUCER_SKEW` seconds behind the real one).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import pytest
import taskapp
from celery_support import (
    POOLS,
    PRODUCER_SKEW,
    REPO,
    BrokerAddresses,
    celery_env,
    start_worker,
    stop,
)
from process_support import SiteProcess
from redis_support import RedisServer, redis_server

from zibrato import Zibrato
from zibrato.framework import celery


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerAddresses]:
    """One zibrato broker for the module (the ``subscribe`` fixture reads from it)."""
    process = SiteProcess(
        [
            *(sys.executable, "-m", "zibrato", "broker"),
            *("--frontend", "tcp://127.0.0.1:0", "--backend-address", "tcp://127.0.0.1:0"),
        ],
        {**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        found = process.wait_line(
            r"publishers connect to (?P<frontend>tcp://\S+); subscribers connect to "
            r"(?P<backend>tcp://\S+)"
        )
        yield BrokerAddresses(found["frontend"], found["backend"])
    finally:
        process.stop()


@pytest.fixture(scope="module")
def workers(redis: RedisServer, broker: BrokerAddresses) -> Iterator[dict[str, SiteProcess]]:
    """One worker per pool (started together), on queues and sources named after it."""
    started: dict[str, SiteProcess] = {}
    extra = {"prefork": ("--max-tasks-per-child=1",)}
    try:
        for pool in POOLS:
            env = celery_env(redis.url, broker.frontend, f"worker-{pool}")
            started[pool] = start_worker(
                env, pool=pool, queue=f"q-{pool}", extra=extra.get(pool, ())
            )
        yield started
    finally:
        for worker in started.values():
            stop(worker)


@pytest.fixture(scope="module")
def producer(redis: RedisServer, broker: BrokerAddresses) -> Iterator[Zibrato]:
    """``taskapp.app`` on the test's Redis, instrumented in this process; its client."""
    taskapp.app.conf.broker_url = redis.url
    client = Zibrato(publish=broker.frontend, source="producer")
    celery.instrument(taskapp.app, client=client, clock=lambda: time.time() - PRODUCER_SKEW)
    try:
        yield client
    finally:
        celery.uninstrument(taskapp.app)
        taskapp.app.pool.force_close_all()
        client.close()
