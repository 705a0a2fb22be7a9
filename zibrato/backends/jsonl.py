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
    Timer statistics are in seconds; a set has ``value``, its number of distinct members.

    The file is opened (created if missing, appended to if not) when the backend is
    made, so a path that cannot be written is a ``ValueError`` at startup that says why;
    a missing directory is an error too, never created for you.
    """

    kind = "jsonl"
    options: ClassVar[tuple[Option, ...]] = (
        Option("path", "file to append to (default: %(default)s)", default=DEFAULT_PATH),
    )

    def __init__(self, *, path: str = DEFAULT_PATH, **common: Any) -> None:
        super().__init__(**common)
        self.path = path
        self._file: IO[str] | None = open_for_append(path)

    def emit(self, rollup: Rollup) -> None:
        if self._file is None:  # emitting after stop(): open it again
            self._file = open_for_append(self.path)
        lines = [json.dumps(series_record(rollup, s), allow_nan=False) for s in rollup.series]

        if lines:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()

    def close_target(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_for_append(path: str) -> IO[str]:
    """Open ``path`` for appending; raise ``ValueError`` saying why it cannot be written."""
    where = f"jsonl backend: cannot write metrics to {path!r}"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        return open(path, "a", encoding="utf-8")  # kept open until stop()
    except FileNotFoundError:
        raise ValueError(
            f"{where}: the directory {directory!r} does not exist "
            "(create it first: it is not created for you)"
        ) from None
    except IsADirectoryError:
        raise ValueError(
            f"{where}: it is a directory; name a file, e.g. {os.path.join(path, DEFAULT_PATH)!r}"
        ) from None
    except OSError as exc:
        raise ValueError(f"{where}: {exc.strerror or exc}") from None


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
