"""Fixtures for the Flask adapter: the shop app of ``flask_support``, with or without Zibrato.

* ``make_app(zibrato=True, **config)``: a fresh app, instrumented unless ``zibrato=False``;
  ``app.test_client()`` drives it.
* ``metrics``: every metric recorded during the test (``zibrato.testing.capture``).
* Every test ends with the process's Flask publishers closed, so none leaks into the next.

The ``existing_site`` folder is another project's test suite, run as a subprocess by
``test_unchanged.py``; pytest must not collect it here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_support import MakeApp, build_shop

from zibrato.testing import CapturedMetrics, capture
from zibrato_flask import Zibrato, clients

collect_ignore = ["existing_site"]


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Build instrumented (or bare) copies of the test app."""

    def make(zibrato: bool = True, **config: Any) -> Flask:
        app = build_shop({"TESTING": True, **config})
        if zibrato:
            Zibrato(app)
        return app

    yield make


@pytest.fixture(autouse=True)
def _independent_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No inherited ZIBRATO_PUBLISH; the process's Flask publishers closed afterwards."""
    monkeypatch.delenv("ZIBRATO_PUBLISH", raising=False)
    yield
    clients.close_all(linger=0)


@pytest.fixture
def metrics() -> Iterator[CapturedMetrics]:
    """Every metric recorded during the test, no broker needed."""
    with capture() as captured:
        yield captured
