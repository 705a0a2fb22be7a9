"""The ``zibrato`` command: ``broker``, ``tail`` (and, with the backends, more)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from zibrato import __version__, levels, protocol
from zibrato.broker import DEFAULT_BACKEND, DEFAULT_FRONTEND, AddressInUse, Broker
from zibrato.protocol import Batch
from zibrato.subscriber import Subscriber

log = logging.getLogger("zibrato")


def stop_on_signals() -> threading.Event:
    """Return an event that SIGINT or SIGTERM sets (install from the main thread)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def level_arg(value: str) -> str:
    """argparse type for ``--level``."""
    try:
        return levels.normalize(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- broker ------------------------------------------------------------------------
def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frontend", default=DEFAULT_FRONTEND,
                        help="where publishers connect (default: %(default)s)")
    parser.add_argument("--backend", default=DEFAULT_BACKEND,
                        help="where subscribers and backends connect (default: %(default)s)")


def run_broker(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    broker = Broker(args.frontend, args.backend)
    try:
        frontend, backend = broker.start()
    except AddressInUse as exc:
        print(f"zibrato broker: {exc}", file=sys.stderr)
        return 2
    print(f"zibrato broker: publishers connect to {frontend}; "
          f"subscribers connect to {backend}", flush=True)
    stop.wait()
    broker.stop()
    print("zibrato broker: stopped", flush=True)
    return 0


# -- tail --------------------------------------------------------------------------
def event_record(batch: Batch, event: Sequence[Any]) -> dict[str, Any]:
    """Return one event as the JSON object ``zibrato tail --json`` prints."""
    kind, name, value, source, tags = event
    return {
        "type": protocol.KIND_NAMES[kind],
        "name": name,
        "value": value,
        "delta": kind == protocol.Kind.GAUGE_DELTA,
        "level": batch.level,
        "source": source or batch.source,
        "tags": protocol.merged_tags(batch.tags, tags),
        "timestamp": batch.timestamp,
        "publisher": batch.publisher,
    }


def format_line(record: dict[str, Any]) -> str:
    """Return one event as the human-readable line ``zibrato tail`` prints."""
    when = datetime.fromtimestamp(record["timestamp"], UTC).strftime("%H:%M:%S.%f")[:-3]
    value = record["value"]
    if record["type"] == "timer":
        shown = f"{value * 1000:.3f}ms"
    elif record["delta"]:
        shown = f"{value:+g}"
    else:
        shown = f"{value:g}"
    parts = [when, f"{record['level']:<7}", f"{record['type']:<12}", record["name"], shown]
    if record["source"]:
        parts.append(f"source={record['source']}")
    parts.extend(f"{k}={v}" for k, v in sorted(record["tags"].items()))
    return " ".join(parts)


def tail(
    subscriber: Subscriber,
    out: TextIO,
    *,
    as_json: bool,
    stop: threading.Event,
    on_idle: Callable[[], None] | None = None,
) -> None:
    """Print every valid event from ``subscriber`` to ``out`` until ``stop`` is set."""
    rejected: dict[str, int] = {}
    while not stop.is_set():
        batch = subscriber.receive(timeout=0.1)
        if batch is None:
            if on_idle:
                on_idle()
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


def run_tail(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    subscriber = Subscriber(args.connect, level=args.level)
    try:
        tail(subscriber, sys.stdout, as_json=args.json, stop=stop)
    except BrokenPipeError:  # `zibrato tail | head` closed our output
        pass
    finally:
        subscriber.close()
        if subscriber.losses.lost_events or subscriber.bad_messages:
            print(f"zibrato tail: {subscriber.losses.lost_events} event(s) lost on the way, "
                  f"bad messages: {subscriber.bad_messages}", file=sys.stderr)
    return 0


# -- entry point -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zibrato", description="Zibrato: low-overhead metrics over ZeroMQ."
    )
    parser.add_argument("--version", action="version", version=f"zibrato {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser("broker", help="forward publishers to subscribers",
                                 description="Run the XSUB/XPUB forwarder.")
    add_broker_arguments(broker)
    broker.set_defaults(handler=run_broker)

    tail_parser = commands.add_parser("tail", help="print live events, one per line",
                                      description="Print every event the broker forwards.")
    tail_parser.add_argument("--connect", default=DEFAULT_BACKEND,
                             help="the broker's backend address (default: %(default)s)")
    tail_parser.add_argument("--level", type=level_arg, default=levels.DEFAULT_THRESHOLD,
                             help="lowest level to show (default: %(default)s)")
    tail_parser.add_argument("--json", action="store_true",
                             help="one JSON object per event instead of a text line")
    tail_parser.set_defaults(handler=run_tail)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())

