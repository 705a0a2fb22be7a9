"""Fixtures for the Django adapter's tests: the test site in ``djtest``, data, failures.

Django is configured here, from ``djtest/settings.py``, when these tests are collected,
and not through ``DJANGO_SETTINGS_MODULE``: pytest-django would export that variable to
every process the session starts, and other suites start pytest and Python subprocesses
that must not try to load this site. Subprocesses of these tests get it from
``django_support.site_env()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import django
import pytest
from django.conf import settings
from django_support import manage, site_env
from process_support import SiteProcess

from zibrato.testing import CapturedMetrics
from zibrato_django import failures, zibrato


def _configure_django() -> None:
    from djtest import settings as site_settings

    if not settings.configured:
        settings.configure(
            **{name: getattr(site_settings, name) for name in dir(site_settings) if name.isupper()}
        )
    django.setup()


_configure_django()


@pytest.fixture
def start_site() -> Iterator[Callable[..., SiteProcess]]:
    """Start site subprocesses; each is stopped (its whole group) and reaped afterwards."""
    started: list[SiteProcess] = []

    def start(*args: str, **env: str) -> SiteProcess:
        process = SiteProcess(manage(*args), site_env(**env))
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Close the shared client after each test and every fixture's teardown (a database
    teardown runs queries, which record): no publisher thread outlives a Django test."""
    try:
        return (yield)
    finally:
        zibrato.reset(linger=0)
