"""The console and jsonl backends: what a user reads on the terminal and in the file,
and several publishing processes merging into one series (real broker, real processes).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import read_records, total, wait_records, wait_subscribed
from hypothesis import given, settings
from hypothesis import strategies as st

from zibrato import protocol
from zibrato.aggregation import Aggregator, Rollup, Series
from zibrato.backends import load
from zibrato.backends.console import ConsoleBackend, render_table
from zibrato.backends.jsonl import JsonLinesBackend

NOWHERE = "tcp://127.0.0.1:1"  # never connected: these backends are flushed by hand
HEADER = re.compile(r"^-- zibrato \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  \d+\.\ds  (?P<n>\d+) series --$")
TIMER_KEYS = {"count", "sum", "min", "max", "mean", "median", "stddev", "p90", "p95", "p99"}


def feed(backend: Any, events: list[tuple[Any, ...]]) -> None:
    backend.aggregator.add_events(events)


# -- console ---------------------------------------------------------------------------------
SNAPSHOT_EVENTS = [
    (0, "orders.placed", 3, "web-1", {"app": "shop"}),
    (0, "orders.placed", 2, "web-1", {"app": "shop"}),
    (0, "orders.cancelled", 1, None, None),
    (1, "queue.depth", 12, None, None),
    (2, "queue.depth", -0.5, None, None),
    (5, "users.active", "ann", None, {"shop": "eu"}),
    (5, "users.active", "bob", None, {"shop": "eu"}),
    (3, "orders.load", 0.25, None, {"db": "main"}),
    (3, "orders.load", 0.75, None, {"db": "main"}),
    (3, "cache.get", 0.0000125, None, None),
    (3, "cache.get", 0.0000375, None, None),
    (3, "report.build", 12.5, None, None),
    (4, "orders.items", 3, None, None),
    (4, "orders.items", 4, None, None),
    (
        3,
        "http.server.request.duration",
        0.0123,
        None,
        {
            "http.route": "/api/v1/orders/<int:order_id>/items/<int:item_id>",
            "http.request.method": "GET",
            "http.response.status_code": "200",
        },
    ),
]

SNAPSHOT_120 = """\
-- zibrato 2023-11-14 22:13:20Z  10.0s  9 series --
counter                              sum  rate/s
orders.cancelled                       1   0.100
orders.placed source=web-1 app=shop    5   0.500
gauge        value
queue.depth  11.50
set                   distinct
users.active shop=eu         2
timer                                              count  unit    min   mean  median    p90    p95    p99    max  stddev
cache.get                                              2    µs  12.50  25.00   25.00  35.00  36.25  37.25  37.50   12.50
http.server.request.duration                           1    ms  12.30  12.30   12.30  12.30  12.30  12.30  12.30    0.00
  http.request.method=GET
  http.response.status_code=200
  http.route=/api/v1/orders/<int:order_id>/items/
  <int:item_id>
orders.load db=main                                    2    ms  250.0  500.0   500.0  700.0  725.0  745.0  750.0   250.0
report.build                                           1     s  12.50  12.50   12.50  12.50  12.50  12.50  12.50    0.00
distribution  count    min   mean  median    p90    p95    p99    max  stddev
orders.items      2  3.000  3.500   3.500  3.900  3.950  3.990  4.000   0.500
"""  # noqa: E501 - the table is 120 columns wide

SNAPSHOT_60 = """\
-- zibrato 2023-11-14 22:13:20Z  10.0s  9 series --
counter                         sum  rate/s
orders.cancelled                  1   0.100
orders.placed source=web-1        5   0.500
  app=shop
gauge        value
queue.depth  11.50
set                   distinct
users.active shop=eu         2
timer                      count  unit  median    p99    max
cache.get                      2    µs   25.00  37.25  37.50
http.server.request.durat      1    ms   12.30  12.30  12.30
  ion
  http.request.method=GET
  http.response.status_co
  de=200
  http.route=/api/v1/orde
  rs/<int:order_id>/items
  /<int:item_id>
orders.load db=main            2    ms   500.0  745.0  750.0
report.build                   1     s   12.50  12.50  12.50
distribution  count  median    p95    p99    max
orders.items      2   3.500  3.950  3.990  4.000
"""


def snapshot_rollup() -> Rollup:
    agg = Aggregator()
    agg.add_events(SNAPSHOT_EVENTS)
    return agg.rollup(now=1_700_000_000.0, interval=10.0)


@pytest.mark.parametrize(("width", "expected"), [(120, SNAPSHOT_120), (60, SNAPSHOT_60)])
def test_console_table_snapshot(width: int, expected: str) -> None:
    # A section per type with its own column titles; numbers right-aligned, one number of
    # decimals per row; each timer row in its own unit (µs, ms, s); labels that do not fit
    # wrap onto indented lines; at 60 columns the least telling statistics give way.
    rollup = snapshot_rollup()
    text = render_table(rollup, list(rollup.series), width)
    assert text == expected
    assert max(len(line) for line in text.splitlines()) <= width


def test_console_backend_prints_its_table_and_nothing_for_an_empty_flush() -> None:
    out = io.StringIO()
    backend = ConsoleBackend(connect=NOWHERE, stream=out)
    backend.flush()  # only health series, all quiet: nothing at all
    assert out.getvalue() == ""
    feed(backend, SNAPSHOT_EVENTS)
    backend.flush()
    lines = out.getvalue().splitlines()
    match = HEADER.match(lines[0])
    assert match and match["n"] == "9", lines[0]
    # the same table, but for the counters' rates: the interval was not 10 s
    assert [line.split()[:2] for line in lines[1:4]] == [
        line.split()[:2] for line in SNAPSHOT_120.splitlines()[1:4]
    ]
    assert lines[4:] == SNAPSHOT_120.splitlines()[4:]
    assert "zibrato.backend" not in out.getvalue()
    out.seek(0)
    out.truncate()
    backend.emit(snapshot_rollup())
    assert out.getvalue() == SNAPSHOT_120


def test_console_shows_health_when_asked_and_losses_always() -> None:
    hidden, shown = io.StringIO(), io.StringIO()
    for stream, health in ((hidden, False), (shown, True)):
        backend = ConsoleBackend(connect=NOWHERE, stream=stream, health=health)
        feed(backend, [(0, "hits", 1, None, None), (0, "bad name", 1, None, None)])
        backend.flush()
    text = hidden.getvalue()
    assert "hits" in text
    # a loss is shown even without --health; the backend's routine series are not
    assert re.search(
        r"^zibrato\.backend\.bad_events backend=console +1 +\S+\n  reason=invalid_name$",
        text,
        re.M,
    )
    for name in ("events", "lost_events", "target_errors", "series", "flush_seconds"):
        assert f"zibrato.backend.{name} " not in text, name
        assert f"zibrato.backend.{name} " in shown.getvalue(), name
    header = HEADER.match(shown.getvalue().splitlines()[0])
    assert header and header["n"] == "8"  # hits, bad_events and six health series


def test_console_shows_hostile_names_and_tags_safely() -> None:
    forged = "eu\n-- zibrato 2023-11-14 22:13:20Z  10.0s  1 series --\ncounter  forged  1"
    rollup = Rollup(
        1_700_000_000.0,
        10.0,
        (
            Series(
                "hits",
                "counter",
                "web\u202e1",
                {"shop": forged, "esc": "\x1b[2J"},
                {"sum": 1, "rate": 0.1},
            ),
            Series("a\\b", "gauge", None, {"k=v": "x y"}, {"value": 2}),
        ),
    )
    text = render_table(rollup, list(rollup.series), width=200)  # no tag is cut
    assert "\x1b" not in text and "\u202e" not in text
    assert all(line.isprintable() for line in text.splitlines())
    assert [line for line in text.splitlines() if line.startswith("-- zibrato")] == [
        "-- zibrato 2023-11-14 22:13:20Z  10.0s  2 series --"
    ]
    assert not [line for line in text.splitlines() if line.startswith("counter  forged")]
    assert 'shop="eu\\n-- zibrato' in text  # the newline shown as \n, inside quotes
    assert "esc=\\x1b[2J" in text
    assert "source=web\\u202e1" in text
    assert '"k=v"="x y"' in text  # quoted: reads as one tag, not two
    assert "a\\\\b " in text  # a backslash is doubled, so escapes cannot be forged


def test_console_width_has_a_floor() -> None:
    with pytest.raises(ValueError, match="at least 60 columns, not 40"):
        ConsoleBackend(connect=NOWHERE, width=40)


tag_text = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=80).filter(
            lambda name: protocol.check_name(name) is None
        ),
        min_size=1,
        max_size=6,
        unique=True,
    ),
    tags=st.dictionaries(st.text(min_size=1, max_size=30), tag_text, max_size=5),
    width=st.integers(min_value=60, max_value=160),
    value=st.floats(min_value=-1e12, max_value=1e12),  # overflow is issue 9's, not ours
)
def test_console_fits_any_width_whatever_the_names(
    names: list[str], tags: dict[str, str], width: int, value: float
) -> None:
    agg = Aggregator()
    for kind in (0, 1, 3, 4, 5):
        agg.add_events(
            [(kind, name, abs(value) if kind == 3 else value, None, tags) for name in names]
        )
    rollup = agg.rollup(now=1_700_000_000.0, interval=10.0)
    text = render_table(rollup, list(rollup.series), width)
    lines = text.splitlines()
    assert all(len(line) <= width and line.isprintable() for line in lines), text
    rows = [line for line in lines[1:] if not line.startswith(" ")]
    sections = {series.type for series in rollup.series}
    assert len(rows) == len(rollup.series) + len(sections), text  # a title row per section


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
    (tmp_path / "nested" / "dir").mkdir(parents=True)
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


def test_jsonl_missing_directory_is_an_error_at_startup_never_created(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "metrics.jsonl"
    with pytest.raises(ValueError) as caught:
        JsonLinesBackend(connect=NOWHERE, path=str(path))
    assert str(caught.value) == (
        f"cannot write metrics to {str(path)!r}: the directory "
        f"{str(path.parent)!r} does not exist (create it first: it is not created for you)"
    )
    assert not path.parent.exists()


def test_jsonl_path_that_is_a_directory_is_an_error_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"it is a directory; name a file, e\.g\. ") as caught:
        JsonLinesBackend(connect=NOWHERE, path=str(tmp_path))
    assert "\n" not in str(caught.value)


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Check permissions as an ordinary user would meet them: root may write anywhere, so
    as root, act as ``nobody`` in the block (the effective ids only; restored after)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_jsonl_unwritable_path_is_an_error_at_startup(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with unprivileged(), pytest.raises(ValueError) as caught:
            JsonLinesBackend(connect=NOWHERE, path=str(locked / "metrics.jsonl"))
    finally:
        locked.chmod(0o700)
    assert str(caught.value).endswith(": Permission denied"), caught.value
    assert not (locked / "metrics.jsonl").exists()


def test_jsonl_startup_error_from_the_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zibrato",
            "backend",
            "jsonl",
            "--connect",
            NOWHERE,
            "--path",
            str(tmp_path / "missing" / "m.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    path = str(tmp_path / "missing" / "m.jsonl")
    assert result.stderr.splitlines() == [
        f"zibrato backend jsonl: jsonl backend: cannot write metrics to {path!r}: the directory "
        f"{str(tmp_path / 'missing')!r} does not exist (create it first: it is not created "
        "for you) (see zibrato backend jsonl --help)"
    ]
    assert not (tmp_path / "missing").exists()


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
