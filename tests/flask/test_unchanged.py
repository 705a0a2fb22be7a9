"""Installing it changes nothing else (issue 7 item 5).

``existing_site`` is a blog with its own test suite (factory, blueprints, Flask-SQLAlchemy,
sessions, error handlers, a CLI command, strict warnings). It runs three times in
subprocesses: without Zibrato, with ``Zibrato(app)`` in its factory, and with a module-level
``Zibrato()`` plus ``init_app`` (and a decorator applied at import). Every test must give
the same outcome, see the same responses and run the same queries; the process must not
gain a thread or a socket per app or per test; and the metrics must really be published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zibrato.framework import schema

SITE = Path(__file__).with_name("existing_site")
MODES = ("none", "constructor", "init_app")
# What one publisher costs a process, once: its Python thread; ZeroMQ's I/O and reaper
# threads; its connection to the broker; and pyzmq's message-tracking thread, with its own
# ZeroMQ I/O and reaper threads (zibrato/link.py tracks every batch until it is written).
PER_PROCESS = {"threads": 2, "tasks": 6, "sockets": 1}


def run_suite(mode: str, report: Path, publish: str) -> dict[str, dict[str, Any]]:
    """Run the blog's suite with Zibrato added as ``mode``; return what each test saw."""
    env = {**os.environ, "BLOG_ZIBRATO": mode, "BLOG_REPORT": str(report)}
    env["ZIBRATO_PUBLISH"] = publish
    env["PYTHONHASHSEED"] = "0"  # Werkzeug lists the Allow header's methods in set order
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(SITE),
            "-c",
            str(SITE / "pytest.ini"),
            "--rootdir",
            str(SITE),
            "--confcutdir",
            str(SITE),
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{mode}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert "warning" not in done.stdout.lower(), done.stdout
    observed: dict[str, dict[str, Any]] = json.loads(report.read_text(encoding="utf-8"))
    return observed


def test_the_blogs_own_suite_gives_the_same_results(
    tmp_path: Path, broker: Any, subscribe: Callable[..., Any]
) -> None:
    collector = subscribe(level="info")
    runs = {mode: run_suite(mode, tmp_path / f"{mode}.json", broker.frontend) for mode in MODES}
    bare = runs["none"]
    assert len(bare) == 14 and all(seen["outcome_call"] == "passed" for seen in bare.values())
    for mode in ("constructor", "init_app"):
        run = runs[mode]
        assert run.keys() == bare.keys()
        for test, seen in run.items():
            expected = bare[test]
            assert seen["outcome_call"] == expected["outcome_call"], (mode, test)
            assert seen["responses"] == expected["responses"], (mode, test)
            assert seen["queries"] == expected["queries"], (mode, test)
        for resource, allowed in PER_PROCESS.items():
            counts = [seen[resource] for seen in run.values()]
            baseline = max(seen[resource] for seen in bare.values())
            # 14 tests, each with its own app: one publisher for the whole process,
            # started by the first request; nothing per app or per test.
            assert counts == sorted(counts), (mode, resource, counts)
            assert counts[-1] <= baseline + allowed, (mode, resource, counts, baseline)
    # ...and the instrumentation was really on: the blog's requests reached the broker.
    collector.wait_for(
        lambda got: (
            "blog.list" in {e.name for e in got}
            and len({e.publisher for e in got if e.name == schema.REQUEST_DURATION}) == 2
        ),
        "request metrics from both instrumented runs, and the decorated function's timer",
    )
    routes = {e.tags.get("http.route") for e in collector.named(schema.REQUEST_DURATION)}
    assert {"/posts/<int:post_id>", "/auth/login", "<unmatched>"} <= routes


@pytest.mark.parametrize("mode", MODES)
def test_the_site_module_imports_without_side_effects(mode: str) -> None:
    code = (
        "import sys, threading; sys.path.insert(0, sys.argv[1]); import blog; "
        "assert threading.active_count() == 1, threading.enumerate(); "
        "import zibrato_flask.clients as c; assert c.publisher_count() == 0"
    )
    env = {**os.environ, "BLOG_ZIBRATO": mode}
    subprocess.run([sys.executable, "-c", code, str(SITE)], env=env, check=True, timeout=60)
