"""The dashboard's history: every flush's points in one SQLite file, downsampled with age.

Tables (``PRAGMA user_version`` is the schema version):

* ``series(id, scope, name, type, source, tags)``: one row per series; ``scope`` 0 for a
  series as received, 1 for a route summary the dashboard computed (``routes.py``), 2
  for a task summary (``tasks.py``);
  ``tags`` is a JSON object with sorted keys; ``source`` is ``''`` when there is none.
* ``points(tier, ts, series, count, sum, min, max, last, p50, p90, p95, p99)``: one row
  per series per span (see ``downsampling.Point``); ``tier`` indexes the store's tiers,
  ``ts`` is the end of the span in milliseconds since the epoch; values are scaled to
  integers (``SCALES``). Rows are keyed in time order, so a flush appends and
  compaction cuts one range off the front of a tier. Series 0 is the flushes
  themselves: ``count`` flushes covering ``sum`` seconds, which turns a counter's sum
  into a rate and tells a quiet series (no point: zero requests) from a gap in history.

Each tier holds the points younger than its ``keep``; :meth:`HistoryStore.compact` merges
older ones into the next tier's buckets (or drops them from the last), so the tiers cover
disjoint spans of time and the file stops growing once the oldest tier is full. Every
write is one committed transaction: a restart loses nothing already written. At most
``max_series`` series are stored; points of further series are counted, not stored.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zibrato.aggregation import SeriesType
from zibrato.backends.dashboard.downsampling import (
    FIELDS,
    Point,
    Tier,
    compaction_cutoff,
    downsample,
    merge,
)
from zibrato.errors import ConfigError

SCHEMA_VERSION = 1
RECEIVED, ROUTE, TASK = 0, 1, 2  # series scopes
COVERAGE = 0  # the series id of the flushes themselves
DEFAULT_MAX_STORED_SERIES = 5_000
# Values are stored as integers where that loses nothing a chart can show: timers (and
# the flushes' seconds) in microseconds, distributions in thousandths. An integer takes
# 2 to 4 bytes in SQLite, a float 8: this halves the file.
SCALES: dict[str, int] = {SeriesType.TIMER: 1_000_000, SeriesType.DISTRIBUTION: 1_000}
_COVERAGE_SCALE = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    scope INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (scope, name, type, source, tags)
);
CREATE TABLE IF NOT EXISTS points (
    tier INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    series INTEGER NOT NULL,
    count, sum, min, max, last, p50, p90, p95, p99,
    PRIMARY KEY (tier, ts, series)
) WITHOUT ROWID;
"""
_COLUMNS = ", ".join(FIELDS)
_INSERT = (
    f"INSERT OR REPLACE INTO points (tier, ts, series, {_COLUMNS}) "
    f"VALUES ({', '.join('?' * (3 + len(FIELDS)))})"
)

# (scope, name, type, source or '', tags as canonical JSON)
Identity = tuple[int, str, str, str, str]


class HistoryError(ConfigError):
    """The history file cannot be used: not SQLite, another schema version, unwritable."""


@dataclass(frozen=True, slots=True)
class StoredSeries:
    """One series of the history."""

    id: int
    scope: int
    name: str
    type: str
    source: str | None
    tags: Mapping[str, str]


def identity(
    scope: int, name: str, kind: str, source: str | None, tags: Mapping[str, str]
) -> Identity:
    """Return the key a series is stored under."""
    text = json.dumps(dict(sorted(tags.items())), ensure_ascii=False, separators=(",", ":"))
    return (scope, name, kind, source or "", text)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _compact(value: float) -> float:
    # SQLite stores an int in 1 to 8 bytes, a float always in 8.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _scaled(value: float, scale: int) -> float | None:
    scaled = value * scale
    if abs(scaled) < 2**62:
        return round(scaled)
    return scaled if math.isfinite(scaled) else None  # beyond what an integer holds


def _encode(point: Point, scale: int) -> tuple[float | None, ...]:
    """Return a point's fields as stored: values times ``scale``, rounded (see SCALES)."""
    count, *values = point.values()
    if scale == 1:
        return (count, *(None if v is None else _compact(v) for v in values))
    return (count, *(None if v is None else _scaled(v, scale) for v in values))


def _decode(ts_ms: int, stored: Sequence[Any], scale: int) -> Point:
    count, *values = stored
    if scale == 1:
        return Point(ts_ms / 1000, count, *values)
    return Point(ts_ms / 1000, count, *(None if v is None else v / scale for v in values))


class HistoryStore:
    """Points by series and tier in SQLite; written by one thread, read by any.

    >>> store = HistoryStore("history.sqlite3", tiers=(Tier(0, 3600), Tier(60, 86400)))
    >>> store.open()                                                     # doctest: +SKIP
    >>> store.write(time.time(), 10.0, [(identity(0, "hits", "counter", None, {}),
    ...                                  Point(time.time(), sum=3))])    # doctest: +SKIP
    >>> store.compact(time.time()); store.close()                        # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tiers: Sequence[Tier],
        max_series: int = DEFAULT_MAX_STORED_SERIES,
        lock_timeout: float = 5.0,
    ) -> None:
        if not tiers or tiers[0].step != 0:
            raise ValueError("the first tier must keep one point per flush (step 0)")
        if any(tier.step <= 0 for tier in tiers[1:]):
            raise ValueError("downsampled tiers need a positive step")
        self.path = os.fspath(path)
        self.tiers = tuple(tiers)
        self.max_series = max_series
        self.lock_timeout = lock_timeout  # how long a write waits for another's lock
        # Cumulative, for the backend's health.
        self.capped_points = 0  # points of series past max_series
        self.failed_points = 0  # points of writes that failed
        self._ids: dict[Identity, int] = {}
        self._scales: dict[int, int] = {COVERAGE: _COVERAGE_SCALE}
        self._cutoffs: dict[int, int] = {}  # tier -> the cutoff last applied (ms)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<HistoryStore {self.path!r} series={len(self._ids)}>"

    # -- opening and closing -------------------------------------------------------------
    def open(self) -> None:
        """Open (creating if needed) the file; raise HistoryError when it cannot be used."""
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            writer = sqlite3.connect(
                self.path, timeout=self.lock_timeout, check_same_thread=False, isolation_level=None
            )
            try:
                self._prepare(writer)
            except BaseException:
                writer.close()
                raise
            reader = sqlite3.connect(self.path, timeout=self.lock_timeout, check_same_thread=False)
            reader.execute("PRAGMA query_only = 1")
        except (sqlite3.Error, OSError) as exc:
            raise HistoryError(f"cannot use {self.path} as the dashboard history: {exc}") from None
        self._writer, self._reader = writer, reader
        for series_id, scope, name, kind, source, tags in writer.execute(
            "SELECT id, scope, name, type, source, tags FROM series"
        ):
            self._ids[scope, name, kind, source, tags] = series_id
            self._scales[series_id] = SCALES.get(kind, 1)

    def _prepare(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version not in (0, SCHEMA_VERSION) or (version == 0 and tables):
            raise HistoryError(
                f"{self.path} holds something other than a zibrato dashboard history "
                f"(schema {version}); move it away or choose another path"
            )
        # WAL: readers (the web page) never wait for the writer (the flush thread).
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.executescript(
            f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        )

    def close(self) -> None:
        """Close the file (idempotent)."""
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        with self._read_lock:
            if reader is not None:
                reader.close()
        if writer is not None:
            writer.close()

    # -- writing (one thread) ----------------------------------------------------------
    def write(self, ts: float, interval: float, entries: Iterable[tuple[Identity, Point]]) -> None:
        """Store one flush: its span (``interval`` seconds ending at ``ts``) and its points.

        A failed write stores nothing, counts its points in ``failed_points`` and raises.
        """
        writer = self._connection(self._writer)
        pending = list(entries)
        ts_ms = _ms(ts)
        flush = Point(ts, count=1, sum=interval)
        rows = [(0, ts_ms, COVERAGE, *_encode(flush, _COVERAGE_SCALE))]
        added: list[Identity] = []
        capped = 0
        try:
            writer.execute("BEGIN")
            for key, point in pending:
                series_id = self._ids.get(key)
                if series_id is None:
                    if len(self._ids) >= self.max_series:
                        capped += 1
                        continue
                    series_id = self._insert_series(writer, key)
                    added.append(key)
                rows.append((0, ts_ms, series_id, *_encode(point, self._scales[series_id])))
            writer.executemany(_INSERT, rows)
            writer.execute("COMMIT")
        except Exception:
            self.failed_points += len(pending) - capped
            self.capped_points += capped
            for key in added:
                self._scales.pop(self._ids.pop(key), None)
            if writer.in_transaction:
                writer.execute("ROLLBACK")
            raise
        self.capped_points += capped

    def _insert_series(self, writer: sqlite3.Connection, key: Identity) -> int:
        cursor = writer.execute(
            "INSERT INTO series (scope, name, type, source, tags) VALUES (?, ?, ?, ?, ?)", key
        )
        series_id = cursor.lastrowid
        assert series_id is not None
        self._ids[key] = series_id
        self._scales[series_id] = SCALES.get(key[2], 1)
        return series_id

    def compact(self, now: float) -> None:
        """Move points past their tier's ``keep`` to the next tier (or drop them from the
        last) and forget series that have no points left."""
        writer = self._connection(self._writer)
        applied: dict[int, int] = {}
        gone: list[tuple[int]] = []
        writer.execute("BEGIN")
        try:
            for index, tier in enumerate(self.tiers):
                following = self.tiers[index + 1] if index + 1 < len(self.tiers) else None
                cutoff = _ms(compaction_cutoff(now, tier, following))
                if cutoff <= self._cutoffs.get(index, -1):
                    continue  # nothing new has aged out of this tier since last time
                applied[index] = cutoff
                if following is not None:
                    self._move(writer, index, cutoff, following.step)
                writer.execute("DELETE FROM points WHERE tier = ? AND ts <= ?", (index, cutoff))
            if applied:
                gone = writer.execute(
                    "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM points "
                    "WHERE points.series = series.id) RETURNING id"
                ).fetchall()
            writer.execute("COMMIT")
        except BaseException:
            if writer.in_transaction:
                writer.execute("ROLLBACK")
            raise
        self._cutoffs.update(applied)
        if gone:
            forgotten = {series_id for (series_id,) in gone}
            self._ids = {k: v for k, v in self._ids.items() if v not in forgotten}
            for series_id in forgotten:
                self._scales.pop(series_id, None)

    def _move(self, writer: sqlite3.Connection, tier: int, cutoff: int, step: float) -> None:
        """Merge the points of ``tier`` up to ``cutoff`` into buckets of the next tier."""
        by_series: dict[int, list[Point]] = {}
        for ts, series_id, *stored in writer.execute(
            f"SELECT ts, series, {_COLUMNS} FROM points WHERE tier = ? AND ts <= ?",
            (tier, cutoff),
        ):
            scale = self._scales.get(series_id, 1)
            by_series.setdefault(series_id, []).append(_decode(ts, stored, scale))
        rows = []
        for series_id, points in by_series.items():
            scale = self._scales.get(series_id, 1)
            for bucket in downsample(points, step):
                ts_ms = _ms(bucket.ts)
                existing = writer.execute(
                    f"SELECT {_COLUMNS} FROM points WHERE tier = ? AND ts = ? AND series = ?",
                    (tier + 1, ts_ms, series_id),
                ).fetchone()
                if existing is not None:  # a late point for a bucket already built
                    bucket = merge([_decode(ts_ms, existing, scale), bucket], bucket.ts)
                rows.append((tier + 1, ts_ms, series_id, *_encode(bucket, scale)))
        writer.executemany(_INSERT, rows)

    # -- reading (any thread) ----------------------------------------------------------
    def _connection(self, connection: sqlite3.Connection | None) -> sqlite3.Connection:
        if connection is None:
            raise RuntimeError("the dashboard history is not open")
        return connection

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with self._read_lock:
            return self._connection(self._reader).execute(sql, parameters).fetchall()

    def list_series(self, scope: int | None = None) -> list[StoredSeries]:
        """Return the stored series (of one ``scope`` when given)."""
        sql = "SELECT id, scope, name, type, source, tags FROM series WHERE ? IS NULL OR scope = ?"
        rows = self._read(sql, (scope, scope))
        return [
            StoredSeries(series_id, kind_scope, name, kind, source or None, json.loads(tags))
            for series_id, kind_scope, name, kind, source, tags in rows
        ]

    def points(self, series_ids: Iterable[int], start: float, end: float) -> dict[int, list[Point]]:
        """Return each series' points with ``start < ts <= end``, from every tier, in order."""
        found: dict[int, list[Point]] = {}
        wanted = list(dict.fromkeys(series_ids))
        tiers = ", ".join(str(index) for index in range(len(self.tiers)))
        for offset in range(0, len(wanted), 500):  # SQLite limits the number of parameters
            chunk = wanted[offset : offset + 500]
            rows = self._read(
                f"SELECT series, ts, {_COLUMNS} FROM points WHERE tier IN ({tiers}) "
                f"AND ts > ? AND ts <= ? AND series IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY ts",
                (_ms(start), _ms(end), *chunk),
            )
            for series_id, ts, *stored in rows:
                scale = self._scales.get(series_id, 1)
                found.setdefault(series_id, []).append(_decode(ts, stored, scale))
        return found

    def coverage(self, start: float, end: float) -> list[Point]:
        """Return the flush spans with ``start < ts <= end``: ``count`` flushes, ``sum`` s."""
        return self.points([COVERAGE], start, end).get(COVERAGE, [])

    def last_flush(self) -> float | None:
        """Return when the newest stored flush ended (None when the history is empty)."""
        return self._span_end("DESC")

    def first_flush(self) -> float | None:
        """Return when the oldest stored span ended (None when the history is empty)."""
        return self._span_end("ASC")

    def _span_end(self, order: str) -> float | None:
        tiers = range(len(self.tiers)) if order == "DESC" else reversed(range(len(self.tiers)))
        for tier in tiers:
            rows = self._read(
                f"SELECT ts FROM points WHERE tier = ? AND series = ? ORDER BY ts {order} LIMIT 1",
                (tier, COVERAGE),
            )
            if rows:
                return float(rows[0][0]) / 1000
        return None

    def point_counts(self) -> list[int]:
        """Return how many points each tier holds (the flushes' own included)."""
        rows = dict(self._read("SELECT tier, count(*) FROM points GROUP BY tier"))
        return [rows.get(index, 0) for index in range(len(self.tiers))]

    @property
    def series_count(self) -> int:
        """How many series are stored."""
        return len(self._ids)
