"""``console``: a readable table of every series, once per flush."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from typing import Any, ClassVar, TextIO

from zibrato.aggregation import Rollup, Series
from zibrato.backends.base import Backend, Option


class ConsoleBackend(Backend):
    """Print each rollup as a table to standard output (or any text stream).

    >>> ConsoleBackend(connect="tcp://127.0.0.1:5551", flush_interval=5).start()  # doctest: +SKIP
    """

    kind = "console"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "health",
            "also show the backend's own zibrato.backend.* series",
            flag=True,
            default=False,
        ),
    )

    def __init__(
        self, *, stream: TextIO | None = None, health: bool = False, **common: Any
    ) -> None:
        super().__init__(**common)
        self.stream = stream
        self.health = health
        self._write_lock = threading.Lock()

    def describe(self) -> str:
        return "printing a table to standard output"

    def emit(self, rollup: Rollup) -> None:
        series = [
            s for s in rollup.series if self.health or not s.name.startswith("zibrato.backend.")
        ]
        out = self.stream or sys.stdout
        with self._write_lock:
            out.write(render_table(rollup, series))
            out.flush()


def render_table(rollup: Rollup, series: list[Series]) -> str:
    """Return the text of one flush: a header line, then one row per series."""
    when = datetime.fromtimestamp(rollup.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
    header = f"-- zibrato {when}Z  {rollup.interval:.1f}s  {len(series)} series --\n"
    if not series:
        return header
    rows = [("type", "name", "source", "tags", "value")]
    for s in sorted(series, key=lambda s: (s.type, s.name, s.source or "", sorted(s.tags.items()))):
        rows.append(
            (
                s.type,
                s.name,
                s.source or "-",
                ",".join(f"{k}={v}" for k, v in sorted(s.tags.items())) or "-",
                _describe(s),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]
    return header + "\n".join(lines) + "\n"


def _describe(series: Series) -> str:
    st = series.stats
    if series.type == "counter":
        return f"sum={st['sum']:g} rate={st['rate']:.3g}/s"
    if series.type == "gauge":
        return f"value={st['value']:g}"
    scale, unit = (1000.0, "ms") if series.type == "timer" else (1.0, "")
    shown = " ".join(
        f"{k}={st[k] * scale:.4g}{unit}" for k in st if k not in ("count", "sum", "sum_squares")
    )
    return f"count={st['count']:g} {shown}"
