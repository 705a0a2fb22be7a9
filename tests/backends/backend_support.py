"""Helpers the backend tests share: waiting for a broker to know a subscription, reading the
files the jsonl backend writes, and making backends whose targets are closed afterwards.

Imported by the test modules (``from backend_support import ...``); the ``inproc_broker``
fixture is in this folder's ``conftest.py``. Every wait has a deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import zmq

from zibrato.backends.base import Backend

WAIT = 10.0
Records = list[dict[str, Any]]
B = TypeVar("B", bound=Backend)


# -- broker subscriptions --------------------------------------------------------------------
def wait_subscribed(
    frontend: str, topics: Iterable[bytes] = (b"info",), timeout: float = WAIT
) -> None:
    """Wait until the broker at ``frontend`` knows subscriptions to ``topics``: a publisher
    connecting afterwards is told about them at once (so no event is held or lost)."""
    probe = zmq.Context.instance().socket(zmq.XPUB)
    probe.setsockopt(zmq.LINGER, 0)
    try:
        probe.connect(frontend)
        wait_for_subscriptions(probe, set(topics), timeout)
    finally:
        probe.close(linger=0)


def wait_for_subscriptions(sock: zmq.Socket[Any], topics: set[bytes], timeout: float) -> None:
    """Read subscription messages on the XPUB ``sock`` until every one of ``topics`` came."""
    seen: set[bytes] = set()
    deadline = time.monotonic() + timeout
    while not topics <= seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the broker forwarded {seen}, not {topics}")
        if sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
            message = sock.recv()
            if message[:1] == b"\x01":
                seen.add(message[1:])


# -- jsonl files -----------------------------------------------------------------------------
def no_constants(name: str) -> Any:
    raise AssertionError(f"non-standard JSON constant {name} in the output")


def read_records(path: Path) -> Records:
    """Every complete line of the file, parsed strictly (NaN/Infinity are errors)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line, parse_constant=no_constants) for line in complete.splitlines()]


def total(records: Records, name: str, key: str = "sum") -> float:
    """The sum of ``key`` over the records of series ``name``."""
    return sum(r[key] for r in records if r["name"] == name)


def wait_records(path: Path, done: Callable[[Records], bool], timeout: float = WAIT) -> Records:
    """Read the file until ``done(records)`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; the file holds {records[-20:]}")
        time.sleep(0.05)


# -- backends with a target --------------------------------------------------------------------
def backend_maker(cls: type[B], **defaults: Any) -> Iterator[Callable[..., B]]:
    """For a fixture (``yield from backend_maker(...)``): yield ``make(**options)``, which
    returns ``cls(**defaults, **options)``; every target made is closed afterwards."""
    made: list[B] = []

    def make(**options: Any) -> B:
        backend = cls(**{**defaults, **options})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close_target()
