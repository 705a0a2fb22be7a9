"""Fixtures for the Django adapter's tests: the test site in ``djtest``, data, helpers.

``DJANGO_SETTINGS_MODULE`` is ``djtest.settings`` (pyproject.toml); ``tests/django`` is on
the import path so that subprocesses can use the same site (``manage.py`` beside this file).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from zibrato.testing import CapturedMetrics, RecordedEvent
from zibrato_django import failures, zibrato

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


@pytest.fixture
def shelves(db: None) -> list[int]:
    """Three shelves of two items each; return the item ids."""
    from djtest.models import Item, Shelf

    ids = []
    for number in range(3):
        shelf = Shelf.objects.create(name=f"shelf{number}")
        for position in range(2):
            ids.append(Item.objects.create(name=f"item{number}.{position}", shelf=shelf).pk)
    return ids


@pytest.fixture
def metrics(zibrato_metrics: CapturedMetrics) -> Iterator[CapturedMetrics]:
    """Captured metrics, cleared of what the fixtures' own queries recorded."""
    zibrato_metrics.clear()
    yield zibrato_metrics


@pytest.fixture
def provoked_failures() -> Iterator[Callable[[], dict[str, int]]]:
    """For a test that makes Zibrato fail on purpose: returns the new failures by reason."""
    before = dict(failures.counts)

    def new() -> dict[str, int]:
        return {k: v - before.get(k, 0) for k, v in failures.counts.items() if v != before.get(k)}

    yield new
    failures.counts.clear()
    failures.counts.update(before)


@pytest.fixture(autouse=True)
def no_zibrato_failures() -> Iterator[None]:
    """Every test fails if Zibrato failed inside it without the test asking for it."""
    before = dict(failures.counts)
    yield
    assert failures.counts == before, f"zibrato failures: {failures.counts} (before: {before})"


@pytest.fixture(scope="session", autouse=True)
def close_client() -> Iterator[None]:
    yield
    zibrato.reset(linger=0)
