"""``jsonl``: append one JSON object per series per flush to a file."""

from __future__ import annotations

import json
import math
import os
from typing import IO, Any, ClassVar

from zibrato.aggregation import Rollup, Series
from zibrato.backends.base import Backend, Option

DEFAULT_PATH = "zibrato-metrics.jsonl"


class JsonLinesBackend(Backend):
    """Append rollups to ``path`` as JSON lines, one object per series.

    Each line has ``ts``, ``interval``, ``name``, ``type``, ``source``, ``tags`` and the
    statistics of its type: counters ``sum`` and ``rate``; gauges ``value``; timers and
    distributions ``count``, ``sum``, ``min``, ``max``, ``mean``, ``median``,
    ``stddev``, ``sum_squares`` and the percentiles (``p90``, ``p95``, ``p99``).
    Timer statistics are in seconds.
    """

    kind = "jsonl"
    options: ClassVar[tuple[Option, ...]] = (
        Option("path", "file to append to (default: %(default)s)", default=DEFAULT_PATH),
    )

    def __init__(self, *, path: str = DEFAULT_PATH, **common: Any) -> None:
        super().__init__(**common)
        self.path = path
        self._file: IO[str] | None = None

    def emit(self, rollup: Rollup) -> None:
        if self._file is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        lines = [json.dumps(series_record(rollup, s), allow_nan=False) for s in rollup.series]

        if lines:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()

    def describe(self) -> str:
        return f"appending to {os.path.abspath(self.path)}"

    def close_target(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def series_record(rollup: Rollup, series: Series) -> dict[str, Any]:
    """Return the JSON object of one series in one rollup."""
    return {
        "ts": rollup.timestamp,
        "interval": rollup.interval,
        "name": series.name,
        "type": series.type,
        "source": series.source,
        "tags": dict(series.tags),
        # JSON has no NaN or infinity; a statistic that overflowed is written as null.
        **{key: value if math.isfinite(value) else None for key, value in series.stats.items()},
    }
