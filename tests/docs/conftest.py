"""Print how many documentation blocks were skipped by a ``docs-test: skip`` marker."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the skipped blocks (each has a reason) so the count stays visible."""
    import test_docs

    skipped = test_docs.skipped_blocks
    if not skipped:
        return
    terminalreporter.write_sep("-", f"docs-test: {len(skipped)} block(s) skipped by marker")
    for entry in skipped:
        terminalreporter.write_line(f"  {entry}")
