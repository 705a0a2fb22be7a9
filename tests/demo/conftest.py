"""Fixtures for the demo's tests (helpers are in ``demo_support.py``).

* ``browser``, ``browser_page``: a real headless Chromium (``tests/browser_support.py``).
* ``prepared_data``: the demo's databases, prepared once per session by the demo's own
  code; ``fresh_data``: a copy of them in a folder of the test's own.
* ``start_demo(*args)``: a :class:`DemoRun` on random ports; killed, with every process
  it started, after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_support import browser, browser_page  # noqa: F401  (fixtures)
from demo_support import ON_RANDOM_PORTS, DemoRun, copy_prepared

from demo_site import prepare


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo-prepared")
    done = prepare.prepare(data)
    assert len(done.ran) == len(prepare.STEPS), done
    return data


@pytest.fixture
def fresh_data(prepared_data: Path, tmp_path: Path) -> Path:
    return copy_prepared(prepared_data, tmp_path / "data")


@pytest.fixture
def start_demo(fresh_data: Path) -> Iterator[Callable[..., DemoRun]]:
    runs: list[DemoRun] = []

    def start(*args: str, env: dict[str, str] | None = None) -> DemoRun:
        run = DemoRun(*ON_RANDOM_PORTS, *args, data=fresh_data, env=env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
