"""``zibrato tail``: print every event the broker forwards, one per line."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from zibrato import protocol
from zibrato.protocol import Batch
from zibrato.security.curve import ClientKeys
from zibrato.subscriber import Subscriber
from zibrato.text import labels, printable, quoted


def event_record(batch: Batch, event: Sequence[Any]) -> dict[str, Any]:
    """Return one event as the JSON object ``zibrato tail --json`` prints."""
    kind, name, value, source, tags = event[:5]
    return {
        "type": protocol.KIND_NAMES[kind],
        "name": name,
        "value": value,
        "delta": kind == protocol.GAUGE_DELTA,
        "level": batch.level,
        "source": source or batch.source,
        "tags": protocol.merged_tags(batch.tags, tags),
        "timestamp": batch.timestamp,
        "publisher": batch.publisher,
        "rate": event[5] if len(event) > 5 else 1.0,
    }


def format_line(record: dict[str, Any]) -> str:
    """Return one event as the human-readable line ``zibrato tail`` prints."""
    when = datetime.fromtimestamp(record["timestamp"], UTC).strftime("%H:%M:%S.%f")[:-3]
    value = record["value"]
    if record["type"] == "timer":
        shown = f"{value * 1000:.3f}ms"
    elif record["type"] == "set":
        shown = quoted(value) if isinstance(value, str) else str(value)
    elif record["delta"]:
        shown = f"{value:+g}"
    else:
        shown = f"{value:g}"
    if record.get("rate", 1) != 1:
        shown += f" @{record['rate']:g}"
    parts = [when, f"{record['level']:<7}", f"{record['type']:<12}", printable(record["name"])]
    parts.append(shown)
    parts.extend(labels(record["source"], record["tags"]))
    return " ".join(parts)


def tail(
    subscriber: Subscriber,
    out: TextIO,
    *,
    as_json: bool,
    stop: threading.Event,
) -> None:
    """Print every valid event from ``subscriber`` to ``out`` until ``stop`` is set."""
    rejected: dict[str, int] = {}
    while not stop.is_set():
        batch = subscriber.receive(timeout=0.1)
        if batch is None:
            continue
        lines = []
        for event in protocol.valid_events(batch, rejected):
            record = event_record(batch, event)
            lines.append(json.dumps(record) if as_json else format_line(record))
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()
        for reason, count in rejected.items():
            subscriber.count_bad(reason, f"{count} invalid event(s): {reason}", count)
        rejected.clear()


def run_tail(
    connect: str,
    *,
    level: str,
    as_json: bool,
    stop: threading.Event,
    name: str = "zibrato tail",
    curve: ClientKeys | str | os.PathLike[str] | None = None,
) -> int:
    """Tail the broker at ``connect`` until ``stop``; say on stderr what we wait on.

    ``curve``: CURVE keys (or their directory) for a CURVE broker; keys that cannot be
    used raise :class:`~zibrato.errors.ConfigError` before anything is printed.
    """
    subscriber = Subscriber(connect, level=level, curve=curve)
    print(
        f"{name}: showing events of level {level} and above from the broker at {connect} "
        "(start one with `zibrato run` if none is running); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    try:
        tail(subscriber, sys.stdout, as_json=as_json, stop=stop)
    except BrokenPipeError:  # `zibrato tail | head` closed our output
        pass
    finally:
        subscriber.close()
        if subscriber.losses.lost_events or subscriber.bad_messages:
            print(
                f"{name}: {subscriber.losses.lost_events} event(s) lost on the way, "
                f"bad messages: {subscriber.bad_messages}",
                file=sys.stderr,
            )
    return 0
