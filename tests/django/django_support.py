"""Helpers for the Django adapter's tests: the test site's paths, subprocess env, lookups.

Subprocesses run as ``process_support.SiteProcess`` (shared with the Flask tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zibrato.testing import CapturedMetrics, RecordedEvent

SITE = Path(__file__).resolve().parent
MANAGE = SITE / "manage.py"
REPO = SITE.parent.parent


def site_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess running the test site (and our checkout)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SITE), str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["DJANGO_SETTINGS_MODULE"] = "djtest.settings"
    env.update(extra)
    return env


def manage(*args: str) -> list[str]:
    """The command line of ``python manage.py ARGS`` for the test site."""
    return [sys.executable, str(MANAGE), *args]


def only(metrics: CapturedMetrics, name: str, **tags: str) -> RecordedEvent:
    """Return the one event called ``name`` with ``tags`` (dots spelled as in the schema)."""
    found = metrics.filter(name, tags=tags)
    assert len(found) == 1, f"expected one {name} {tags}, got {found}"
    return found[0]


def tags_of(event: RecordedEvent, *keys: str) -> Mapping[str, str]:
    return {key: event.tags[key] for key in keys if key in event.tags}


BROKER_LINE = (
    r"zibrato_broker: publishers connect to (?P<frontend>tcp://\S+); "
    r"subscribers connect to (?P<backend>tcp://\S+)"
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Return the records a jsonl backend has written so far."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written
                records.append(json.loads(line))
    return records


def wait_for_records(
    path: Path, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Poll a jsonl file until ``predicate(records)`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_jsonl(path)
        if predicate(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s; {path} holds {records[-10:]}")
        time.sleep(0.05)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for servers that cannot take 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
