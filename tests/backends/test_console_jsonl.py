"""The console and jsonl backends: what a user reads on the terminal and in the file,
and several publishing processes merging into one series (real broker, real processes).
"""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from backend_support import read_records, total, wait_records, wait_subscribed

from zibrato.aggregation import Rollup, Series
from zibrato.backends import load
from zibrato.backends.console import ConsoleBackend, render_table
from zibrato.backends.jsonl import JsonLinesBackend

NOWHERE = "tcp://127.0.0.1:1"  # never connected: these backends are flushed by hand
HEADER = re.compile(r"^-- zibrato \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  \d+\.\ds  (?P<n>\d+) series --$")
TIMER_KEYS = {"count", "sum", "min", "max", "mean", "median", "stddev", "p90", "p95", "p99"}


def feed(backend: Any, events: list[tuple[Any, ...]]) -> None:
    backend.aggregator.add_events(events)


# -- console ---------------------------------------------------------------------------------
def test_console_table_has_a_header_and_one_row_per_series() -> None:
    out = io.StringIO()
    backend = ConsoleBackend(connect=NOWHERE, stream=out)
    feed(
        backend,
        [
            (0, "orders.placed", 3, "web-1", {"app": "shop"}),
            (0, "orders.placed", 2, "web-1", {"app": "shop"}),
            (1, "queue.depth", 12, None, None),
            (3, "orders.load", 0.25, None, {"db": "main"}),
            (3, "orders.load", 0.75, None, {"db": "main"}),
            (4, "payload.bytes", 512, None, None),
        ],
    )
    backend.flush()
    lines = out.getvalue().splitlines()
    match = HEADER.match(lines[0])
    assert match, lines[0]
    assert match["n"] == "4"
    assert lines[1].split() == ["type", "name", "source", "tags", "value"]
    rows = lines[2:]
    assert len(rows) == 4, lines
    by_name = {row.split()[1]: row for row in rows}
    assert set(by_name) == {"orders.placed", "queue.depth", "orders.load", "payload.bytes"}
    placed = by_name["orders.placed"]
    assert placed.split()[:4] == ["counter", "orders.placed", "web-1", "app=shop"]
    assert "sum=5" in placed and "rate=" in placed
    assert "value=12" in by_name["queue.depth"]
    assert by_name["queue.depth"].split()[2:4] == ["-", "-"]
    # timers are shown in milliseconds
    load_row = by_name["orders.load"]
    assert "count=2" in load_row
    assert "mean=500ms" in load_row
    assert "min=250ms" in load_row and "max=750ms" in load_row
    assert "p99=" in load_row and "median=500ms" in load_row
    # distributions have no unit
    assert "mean=512 " in by_name["payload.bytes"] + " "
    assert "ms" not in by_name["payload.bytes"]
    assert "zibrato.backend" not in out.getvalue()


def test_console_shows_health_only_when_asked() -> None:
    hidden, shown = io.StringIO(), io.StringIO()
    for stream, health in ((hidden, False), (shown, True)):
        backend = ConsoleBackend(connect=NOWHERE, stream=stream, health=health)
        feed(backend, [(0, "hits", 1, None, None)])
        backend.flush()
    assert "zibrato.backend" not in hidden.getvalue()
    assert HEADER.match(hidden.getvalue().splitlines()[0])["n"] == "1"  # type: ignore[index]
    text = shown.getvalue()
    for name in ("events", "lost_events", "target_errors", "series", "flush_seconds"):
        assert f"zibrato.backend.{name} " in text, name
    header = HEADER.match(text.splitlines()[0])
    assert header and int(header["n"]) == len(text.splitlines()) - 2
    assert "backend=console" in text


def test_console_with_nothing_to_show_prints_only_the_header() -> None:
    out = io.StringIO()
    ConsoleBackend(connect=NOWHERE, stream=out).flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert HEADER.match(lines[0])["n"] == "0"  # type: ignore[index]


def test_render_table_sorts_rows_and_aligns_columns() -> None:
    rollup = Rollup(1_700_000_000.0, 10.0, ())
    series = [
        Series("b.gauge", "gauge", None, {}, {"value": 1.5}),
        Series("a.counter", "counter", "src", {"z": "1", "a": "2"}, {"sum": 4, "rate": 0.4}),
    ]
    text = render_table(rollup, series)
    lines = text.splitlines()
    assert lines[0] == "-- zibrato 2023-11-14 22:13:20Z  10.0s  2 series --"
    assert lines[2].startswith("counter") and "a=2,z=1" in lines[2]
    assert lines[3].startswith("gauge")
    assert lines[1].index("name") == lines[2].index("a.counter") == lines[3].index("b.gauge")


# -- jsonl -------------------------------------------------------------------------------------
def test_jsonl_lines_hold_each_types_statistics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    backend = JsonLinesBackend(connect=NOWHERE, path=str(path))
    try:
        feed(
            backend,
            [
                (0, "hits", 2, "web-1", {"app": "shop"}),
                (0, "hits", 3, "web-1", {"app": "shop"}),
                (1, "depth", 7, None, None),
                (2, "depth", -2, None, None),
                (3, "load", 0.1, None, None),
                (3, "load", 0.3, None, None),
                (4, "size", 5, None, None),
            ],
        )
        rollup = backend.flush()
    finally:
        backend.stop()
    records = read_records(path)
    assert len(records) == len(rollup.series)
    by_name = {r["name"]: r for r in records}
    for record in records:
        assert {"ts", "interval", "name", "type", "source", "tags"} <= set(record)
        assert record["ts"] == pytest.approx(time.time(), abs=60)
    hits = by_name["hits"]
    assert hits["type"] == "counter" and hits["source"] == "web-1"
    assert hits["tags"] == {"app": "shop"}
    assert hits["sum"] == 5
    assert hits["rate"] == pytest.approx(5 / hits["interval"])
    assert by_name["depth"]["type"] == "gauge" and by_name["depth"]["value"] == 5
    assert by_name["depth"]["source"] is None and by_name["depth"]["tags"] == {}
    load_ = by_name["load"]
    assert load_["type"] == "timer"
    assert set(load_) >= TIMER_KEYS
    assert load_["count"] == 2 and load_["mean"] == pytest.approx(0.2)
    assert load_["min"] == 0.1 and load_["max"] == 0.3  # seconds, not milliseconds
    assert load_["stddev"] == pytest.approx(0.1)
    assert set(by_name["size"]) >= TIMER_KEYS and by_name["size"]["type"] == "distribution"
    assert by_name["zibrato.backend.events"]["tags"] == {"backend": "jsonl"}


def test_jsonl_appends_across_flushes_and_runs_and_closes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "metrics.jsonl"
    first = JsonLinesBackend(connect=NOWHERE, path=str(path))
    try:
        feed(first, [(0, "round", 1, None, None)])
        first.flush()
        feed(first, [(0, "round", 2, None, None)])
        first.flush()
        handle = first._file
        assert handle is not None and not handle.closed
    finally:
        first.stop()
    assert handle.closed
    second = JsonLinesBackend(connect=NOWHERE, path=str(path))
    try:
        feed(second, [(0, "round", 3, None, None)])
        second.flush()
    finally:
        second.stop()
    rounds = [r["sum"] for r in read_records(path) if r["name"] == "round"]
    assert rounds == [1, 2, 3]
    assert len({r["ts"] for r in read_records(path)}) >= 3


def test_jsonl_never_writes_nan(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    backend = JsonLinesBackend(connect=NOWHERE, path=str(path), max_values=4)
    try:
        feed(
            backend,
            [(3, "t", 1e-300, None, None)] * 3
            + [(3, "t", 1.5, None, None)] * 20
            + [(0, "c", math.nan, None, None), (1, "g", math.inf, None, None)]
            + [(4, "d", 0, None, None)],
        )
        backend.flush()
        backend.flush()
    finally:
        backend.stop()
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    records = read_records(path)
    assert {r["name"] for r in records} >= {"t", "d", "zibrato.backend.bad_events"}
    assert not {"c", "g"} & {r["name"] for r in records}
    for record in records:
        for key, value in record.items():
            if isinstance(value, float):
                assert math.isfinite(value), (record["name"], key)
    assert backend.target_errors == 0


def test_jsonl_large_finite_values_do_not_lose_the_flush(tmp_path: Path) -> None:
    # Finite values whose squares overflow a float: the flush must still be written (the
    # design promises exact statistics; at the least the other series must not be lost).
    path = tmp_path / "big.jsonl"
    backend = JsonLinesBackend(connect=NOWHERE, path=str(path))
    try:
        feed(
            backend,
            [
                (4, "huge", 1e300, None, None),
                (4, "huge", -1e300, None, None),
                (0, "hits", 1, None, None),
            ],
        )
        backend.flush()
    finally:
        backend.stop()
    assert backend.target_errors == 0
    records = read_records(path)
    names = {r["name"] for r in records}
    assert "hits" in names
    assert "huge" in names
    huge = next(r for r in records if r["name"] == "huge")
    assert huge["stddev"] == pytest.approx(1e300)


def test_load_returns_the_builtin_classes() -> None:
    assert load("console") is ConsoleBackend
    assert load("jsonl") is JsonLinesBackend
    assert load("zibrato.backends.jsonl:JsonLinesBackend") is JsonLinesBackend


# -- several publishing processes, one series -------------------------------------------------
PUBLISH = textwrap.dedent(
    """
    import sys
    from zibrato import Zibrato

    index, frontend = int(sys.argv[1]), sys.argv[2]
    z = Zibrato(frontend, source="worker", tags={"app": "shop"})
    for _ in range(10):
        z.incr("jobs.done", index + 1, tags={"queue": "default"})
    for n in range(20):
        z.timing("jobs.time", (index * 20 + n) / 1000, tags={"queue": "default"})
    z.gauge("workers", 3)
    z.flush()
    z.close()
    """
)


def test_events_from_several_processes_merge_into_one_series(
    inproc_broker: tuple[str, str], tmp_path: Path
) -> None:
    frontend, backend_address = inproc_broker
    path = tmp_path / "merged.jsonl"
    backend = JsonLinesBackend(connect=backend_address, path=str(path), flush_interval=0.3)
    backend.start()
    processes: list[subprocess.Popen[str]] = []
    try:
        wait_subscribed(frontend)
        for index in range(3):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", PUBLISH, str(index), frontend],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONWARNINGS": "error"},
                )
            )
        for process in processes:
            _, err = process.communicate(timeout=20)
            assert process.returncode == 0, err

        records = wait_records(
            path,
            lambda rs: (
                total(rs, "jobs.done", "sum") >= 60 and total(rs, "jobs.time", "count") >= 60
            ),
        )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=5)
        backend.stop()

    assert total(records, "jobs.done", "sum") == 10 * (1 + 2 + 3)
    assert total(records, "jobs.time", "count") == 60
    per_flush: dict[tuple[float, str], int] = defaultdict(int)
    for record in records:
        per_flush[record["ts"], record["name"]] += 1
    assert all(count == 1 for count in per_flush.values()), "one series per name per flush"
    for name in ("jobs.done", "jobs.time", "workers"):
        for record in (r for r in records if r["name"] == name):
            assert record["source"] == "worker"
    for name in ("jobs.done", "jobs.time"):
        for record in (r for r in records if r["name"] == name):
            assert record["tags"] == {"app": "shop", "queue": "default"}
    timers = [r for r in records if r["name"] == "jobs.time"]
    assert min(r["min"] for r in timers) == 0.0
    assert max(r["max"] for r in timers) == pytest.approx(0.059)
    assert sum(r["sum"] for r in timers) == pytest.approx(sum(range(60)) / 1000)
    assert [r["value"] for r in records if r["name"] == "workers"][-1] == 3
    assert total(records, "zibrato.backend.lost_events", "sum") == 0
    assert total(records, "zibrato.backend.events", "sum") == 3 * (10 + 20 + 1)
