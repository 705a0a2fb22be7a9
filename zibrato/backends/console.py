"""``console``: a readable table of every series, once per flush, that fits the terminal."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import ClassVar, TextIO, Unpack

from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import Backend, BackendOptions, Option
from zibrato.text import labels, printable

DEFAULT_WIDTH = 120
MIN_WIDTH = 60
HEALTH_PREFIX = "zibrato.backend."
PIPELINE_PREFIX = "zibrato."  # the pipeline's own series: never hidden by ``names``
_MIN_LABEL = 24  # the name column never gets narrower than this: numbers give way first
_GAP = "  "
# A timer row's unit: the largest whose scale keeps the row's median at 1 or more.
_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"))
_SECTIONS = (
    SeriesType.COUNTER,
    SeriesType.GAUGE,
    SeriesType.SET,
    SeriesType.TIMER,
    SeriesType.DISTRIBUTION,
)


class ConsoleBackend(Backend):
    """Print each rollup as a table to standard output (or any text stream).

    >>> ConsoleBackend(connect="tcp://127.0.0.1:5551", flush_interval=5).start()  # doctest: +SKIP

    One section per type; numbers right-aligned in columns; each timer row in the unit
    that suits it (s, ms or µs); names and tags wrapped onto more lines rather than
    past ``width`` columns, and shown safely (see :mod:`zibrato.text`). A flush with
    nothing to show prints nothing. The backend's own ``zibrato.backend.*`` series are
    shown with ``health=True``; without it, only those that count a loss or an error
    (when non-zero). ``names`` (comma-separated shell-style patterns, such as
    ``"http.server.*,orders.*"``) shows only the series whose name matches one, for a
    short summary; the pipeline's own ``zibrato.*`` series (losses) are shown regardless.
    """

    kind = "console"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "health",
            "also show the backend's own zibrato.backend.* series",
            flag=True,
            default=False,
        ),
        Option(
            "width",
            f"columns the table may use, at least {MIN_WIDTH} (default: %(default)s)",
            type=int,
            default=DEFAULT_WIDTH,
        ),
        Option(
            "names",
            "show only the series whose name matches one of these comma-separated "
            "patterns, e.g. 'http.server.*,orders.*' (default: every series)",
            default=None,
        ),
    )

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        health: bool = False,
        width: int = DEFAULT_WIDTH,
        names: str | Sequence[str] | None = None,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        if width < MIN_WIDTH:
            raise ValueError(f"the width must be at least {MIN_WIDTH} columns, not {width}")
        self.stream = stream
        self.health = health
        self.width = width
        self.names = name_patterns(names)
        self._write_lock = threading.Lock()

    def describe(self) -> str:
        if self.names:
            return f"printing a table of {','.join(self.names)} to standard output"
        return "printing a table to standard output"

    def emit(self, rollup: Rollup) -> None:
        series = [
            s
            for s in rollup.series
            if (self.health or not _quiet_health(s)) and self._named(s.name)
        ]
        if not series:
            return
        out = self.stream or sys.stdout
        with self._write_lock:
            out.write(render_table(rollup, series, self.width))
            out.flush()

    def _named(self, name: str) -> bool:
        if not self.names or name.startswith(PIPELINE_PREFIX):
            return True
        return any(fnmatchcase(name, pattern) for pattern in self.names)


def name_patterns(names: object) -> tuple[str, ...]:
    """Return the patterns of ``"a.*,b"`` (or of a list of strings); raise ValueError."""
    if names is None:
        return ()
    parts = names.split(",") if isinstance(names, str) else names
    if not isinstance(parts, list | tuple) or not all(isinstance(p, str) for p in parts):
        raise ValueError(f"names must be comma-separated patterns like 'orders.*', not {names!r}")
    return tuple(pattern.strip() for pattern in parts if pattern.strip())


def _quiet_health(series: Series) -> bool:
    """Return whether a health series has nothing worth a line (only losses and errors do)."""
    if not series.name.startswith(HEALTH_PREFIX):
        return False
    if series.type != SeriesType.COUNTER or series.name == HEALTH_PREFIX + "events":
        return True
    return not series.stats["sum"]


def render_table(rollup: Rollup, series: Sequence[Series], width: int = DEFAULT_WIDTH) -> str:
    """Return the text of one flush: a header line, then a section per type."""
    when = datetime.fromtimestamp(rollup.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"-- zibrato {when}Z  {rollup.interval:.1f}s  {len(series)} series --"]
    for kind in _SECTIONS:
        rows = sorted(
            (s for s in series if s.type == kind),
            key=lambda s: (s.name, s.source or "", sorted(s.tags.items())),
        )
        if rows:
            lines.extend(_section(kind, rows, width))
    unknown = [s for s in series if s.type not in _SECTIONS]
    lines.extend(f"{printable(s.type)} {printable(s.name)}: {dict(s.stats)}" for s in unknown)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Column:
    title: str
    cells: list[str]

    @property
    def width(self) -> int:
        return max(len(self.title), *(len(cell) for cell in self.cells))


def _section(kind: str, rows: list[Series], width: int) -> Iterator[str]:
    """Yield the lines of one type's section: a title row, then each series."""
    columns = _columns(kind, rows)
    # Drop the least telling statistics until the name column gets at least _MIN_LABEL.
    while len(columns) > 1 and _MIN_LABEL + _numbers_width(columns) > width:
        columns.remove(min(columns[1:], key=_keep_priority))
    wanted = max(len(kind), *(len(" ".join(_label_tokens(s))) for s in rows))
    # Long labels wrap rather than push the numbers far to the right.
    label_width = min(width - _numbers_width(columns), max(_MIN_LABEL, width // 2), wanted)
    yield _line(kind, [column.title for column in columns], columns, label_width)
    for index, series in enumerate(rows):
        first, *more = _wrap(_label_tokens(series), label_width)
        yield _line(first, [column.cells[index] for column in columns], columns, label_width)
        yield from more


def _line(label: str, cells: list[str], columns: list[_Column], label_width: int) -> str:
    numbers = "".join(
        _GAP + cell.rjust(column.width) for cell, column in zip(cells, columns, strict=True)
    )
    return (label.ljust(label_width) + numbers).rstrip()


def _numbers_width(columns: list[_Column]) -> int:
    return sum(len(_GAP) + column.width for column in columns)


def _keep_priority(column: _Column) -> tuple[int, str]:
    """Lower goes first when space runs out: stddev, min, mean, then the lower percentiles."""
    order = {"stddev": 0, "min": 1, "mean": 2}
    if column.title in order:
        return order[column.title], ""
    if column.title.startswith("p") and column.title[1:2].isdigit():
        return 3, column.title.rjust(8)
    return 9, column.title


def _label_tokens(series: Series) -> list[str]:
    return [printable(series.name), *labels(series.source, series.tags)]


def _wrap(tokens: list[str], width: int) -> list[str]:
    """Fill ``tokens`` into lines of at most ``width``; later lines are indented by two."""
    lines: list[str] = []
    current = ""
    for token in tokens:
        candidate = f"{current} {token}" if current.strip() else current + token
        if len(candidate) <= width:
            current = candidate
            continue
        if current.strip():
            lines.append(current)
            current = "  "
        while len(current) + len(token) > width:  # longer than a line: cut it
            room = width - len(current)
            lines.append(current + token[:room])
            token, current = token[room:], "  "
        current += token
    lines.append(current)
    return lines


def _columns(kind: str, rows: list[Series]) -> list[_Column]:
    if kind == SeriesType.COUNTER:
        return [
            _Column("sum", [format_value(s.stats["sum"]) for s in rows]),
            _Column("rate/s", [format_value(s.stats["rate"]) for s in rows]),
        ]
    if kind == SeriesType.GAUGE:
        return [_Column("value", [format_value(s.stats["value"]) for s in rows])]
    if kind == SeriesType.SET:
        return [_Column("distinct", [format_value(s.stats["value"]) for s in rows])]
    stats = _value_stats(rows)
    scales = [_unit(s) if kind == SeriesType.TIMER else (1.0, "") for s in rows]
    shown = [
        {stat: s.stats[stat] / scale for stat in stats if stat in s.stats}
        for s, (scale, _) in zip(rows, scales, strict=True)
    ]
    # One number of decimals per row, so that a row reads (and aligns) evenly.
    decimals = [_decimals(row.values()) for row in shown]
    columns = [_Column("count", [format_value(s.stats["count"]) for s in rows])]
    if kind == SeriesType.TIMER:
        columns.append(_Column("unit", [unit for _, unit in scales]))
    for stat in stats:
        cells = [
            format_value(row[stat], places) if stat in row else "-"
            for row, places in zip(shown, decimals, strict=True)
        ]
        columns.append(_Column(stat, cells))
    return columns


def _value_stats(rows: Iterable[Series]) -> list[str]:
    """The statistics of a value section, in reading order: min, mean, median, pNN, max."""
    present = {stat for s in rows for stat in s.stats}
    percentiles = sorted(
        (stat for stat in present if stat.startswith("p") and stat[1:2].isdigit()),
        key=lambda stat: float(stat[1:].replace("_", ".")),
    )
    ordered = ["min", "mean", "median", *percentiles, "max", "stddev"]
    return [stat for stat in ordered if stat in present]


def _unit(series: Series) -> tuple[float, str]:
    median = abs(series.stats.get("median", 0.0))
    for scale, unit in _UNITS:
        if median >= scale:
            return scale, unit
    return _UNITS[-1]


def format_value(value: float, decimals: int | None = None) -> str:
    """Return ``value`` with about four significant digits (or ``decimals`` places).

    >>> [format_value(v) for v in (5, 2.0, 0.5, 12.3456, 1234.5, 1e-05, 3e9)]
    ['5', '2', '0.500', '12.35', '1234', '1e-05', '3e+09']
    >>> format_value(7, 2)
    '7.00'
    """
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e9 or 0 < magnitude < 1e-3:
        return f"{value:.3g}"
    if decimals is None:
        decimals = _decimals([value])
    return f"{value:.{decimals}f}"


def _decimals(values: Iterable[float]) -> int:
    """Return the places that give the largest of ``values`` four significant digits
    (none when every value is a whole number)."""
    finite = [value for value in values if math.isfinite(value)]
    if all(value == int(value) for value in finite):
        return 0
    largest = max(abs(value) for value in finite)
    if largest < 1e-3:
        return 3
    return min(3, max(0, 3 - math.floor(math.log10(largest))))
