"""A user backend loaded by dotted path (``custom_backend:MyBackend``) in the CLI tests.

It prints one line per non-health series: ``MARKER TYPE NAME SUM-OR-COUNT``.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from zibrato.aggregation import Rollup
from zibrato.backends.base import Backend, Option


class MyBackend(Backend):
    kind = "custom"
    options: ClassVar[tuple[Option, ...]] = (
        Option("marker", "text that starts every line (default: %(default)s)", default="CUSTOM"),
    )

    def __init__(self, *, marker: str = "CUSTOM", **common: object) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        self.marker = marker

    def emit(self, rollup: Rollup) -> None:
        lines = [
            f"{self.marker} {s.type} {s.name} {s.stats.get('sum', s.stats.get('value', 0)):g}"
            for s in rollup.series
            if not s.name.startswith("zibrato.")
        ]
        lines.append(f"{self.marker} flushed {len(rollup.series)}")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


class NotABackend:
    """Loading this by dotted path must be refused."""
