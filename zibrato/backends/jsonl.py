"""``jsonl``: append one JSON object per series per flush to a file."""

from __future__ import annotations

import json
import math
import os
import stat
from typing import IO, Any, ClassVar, Unpack

from zibrato.aggregation import Rollup, Series
from zibrato.backends.base import Backend, BackendOptions, Option
from zibrato.errors import ConfigError

DEFAULT_PATH = "zibrato-metrics.jsonl"


class JsonLinesBackend(Backend):
    """Append rollups to ``path`` as JSON lines, one object per series.

    Each line has ``ts``, ``interval``, ``name``, ``type``, ``source``, ``tags`` and the
    statistics of its type: counters ``sum`` and ``rate``; gauges ``value``; timers and
    distributions ``count``, ``sum``, ``min``, ``max``, ``mean``, ``median``,
    ``stddev``, ``sum_squares`` and the percentiles (``p90``, ``p95``, ``p99``).
    Timer statistics are in seconds; a set has ``value``, its number of distinct members.

    A path that cannot work is a :class:`~zibrato.errors.ConfigError` that says why, as
    soon as the backend is made (a missing directory, a directory, no write permission:
    checked without touching the file system) and at the latest when it starts (the file
    is opened then, created if missing). A missing directory is never created for you.
    """

    kind = "jsonl"
    options: ClassVar[tuple[Option, ...]] = (
        Option("path", "file to append to (default: %(default)s)", default=DEFAULT_PATH),
    )

    def __init__(self, *, path: str = DEFAULT_PATH, **common: Unpack[BackendOptions]) -> None:
        super().__init__(**common)
        check_writable(path)
        self.path = path
        self._file: IO[str] | None = None

    def start(self) -> None:
        """Open the file (a path that cannot be written fails here, not at a flush), then
        start receiving."""
        if self._file is None:
            self._file = open_for_append(self.path)
        super().start()

    def emit(self, rollup: Rollup) -> None:
        if self._file is None:  # flushed without start(), or after stop()
            self._file = open_for_append(self.path)
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


def _cannot_write(path: str, why: str) -> ConfigError:
    return ConfigError(f"cannot write metrics to {path!r}: {why}")


def _missing_directory(path: str) -> ConfigError:
    directory = os.path.dirname(os.path.abspath(path))
    return _cannot_write(
        path,
        f"the directory {directory!r} does not exist (create it first: it is not created for you)",
    )


def _is_a_directory(path: str) -> ConfigError:
    example = os.path.join(path, DEFAULT_PATH)
    return _cannot_write(path, f"it is a directory; name a file, e.g. {example!r}")


def check_writable(path: str) -> None:
    """Raise ``ConfigError`` when ``path`` clearly cannot be appended to; no side effects."""
    target = path
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            raise _is_a_directory(path)
    except FileNotFoundError:
        target = os.path.dirname(os.path.abspath(path))  # the file will be created there
        if not os.path.lexists(target):
            raise _missing_directory(path) from None
    except NotADirectoryError:
        raise _cannot_write(path, "a part of the path is a file, not a directory") from None
    except OSError as exc:
        raise _cannot_write(path, exc.strerror or str(exc)) from None
    effective = os.access in os.supports_effective_ids  # what this process may do
    if not os.access(target, os.W_OK, effective_ids=effective):
        raise _cannot_write(path, "Permission denied")


def open_for_append(path: str) -> IO[str]:
    """Open ``path`` for appending; raise ``ConfigError`` saying why it cannot be written."""
    try:
        return open(path, "a", encoding="utf-8")  # kept open until stop()
    except FileNotFoundError:
        raise _missing_directory(path) from None
    except IsADirectoryError:
        raise _is_a_directory(path) from None
    except OSError as exc:
        raise _cannot_write(path, exc.strerror or str(exc)) from None


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
