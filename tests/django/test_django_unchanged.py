"""Item 8: installing Zibrato changes nothing else in an existing project.

``tests/django/plainsite`` is an ordinary project with its own test suite (TestCase,
``assertNumQueries``, exact headers, exceptions, streaming, no thread per request). The
suite runs twice with warnings as errors, without and with the app and middleware
(``PLAINSITE_ZIBRATO=1``), and every test must end the same way.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

import pytest
from django_support import SITE, site_env

PLAINSITE = SITE / "plainsite"
OUTCOME = re.compile(r"^(test_\w+) \(([\w.]+)\)(?:\n.*?)? \.\.\. (.+)$", re.M)


def run_suite(**env: str) -> tuple[dict[str, str], str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-W", "error", "manage.py", "test", "--verbosity", "2", "--noinput"],
        cwd=PLAINSITE,
        env=site_env(DJANGO_SETTINGS_MODULE="shop.settings", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    outcomes = {f"{m[2]}.{m[1]}": m[3] for m in OUTCOME.finditer(result.stderr)}
    ran = re.search(r"^Ran (\d+) tests?", result.stderr, re.M)
    summary = re.search(r"^(OK|FAILED).*$", result.stderr, re.M)
    assert ran and summary and int(ran[1]) == len(outcomes) > 0, result.stderr
    other_lines = [
        line
        for line in result.stderr.splitlines()
        if not OUTCOME.match(line) and not line.startswith("Ran ")
    ]
    return outcomes, f"exit {result.returncode}: {summary[0]}", other_lines


@pytest.mark.timeout(240)
def test_the_projects_own_suite_gives_identical_results_with_zibrato() -> None:
    without, without_summary, without_lines = run_suite(PLAINSITE_ZIBRATO="0")
    with_zibrato, with_summary, with_lines = run_suite(PLAINSITE_ZIBRATO="1")
    assert with_zibrato == without
    assert with_summary == without_summary == "exit 0: OK (skipped=1, expected failures=1)"
    assert set(without.values()) == {"ok", "expected failure", "skipped 'not written yet'"}
    # The one addition: with no broker running, the client says so once, on stderr.
    added = [line for line in with_lines if line not in without_lines]
    assert added == [
        f"zibrato: no broker answers at ipc://{tempfile.gettempdir()}/plainsite-none; start "
        "one with `python manage.py zibrato_broker` (or point ZIBRATO_PUBLISH at one). Until "
        "one answers, events are dropped and counted as zibrato.publisher.dropped{reason=no_broker}"
    ]
    assert not any("Warning" in line for line in with_lines)
