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

from zibrato import __version__, backends, levels, protocol
from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND
from zibrato.aggregation import DEFAULT_PERCENTILES
from zibrato.backends.base import DEFAULT_FLUSH_INTERVAL, Backend
from zibrato.broker import AddressInUse, Broker
from zibrato.protocol import Batch
from zibrato.runner import Runner
from zibrato.subscriber import Subscriber
from zibrato.text import labels, printable, quoted


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
    parser.add_argument(
        "--frontend",
        default=DEFAULT_FRONTEND,
        help="where publishers connect (default: %(default)s)",
    )
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        help="where subscribers and backends connect (default: %(default)s)",
    )


def run_broker(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    broker = Broker(args.frontend, args.backend)
    try:
        frontend, backend = broker.start()
    except AddressInUse as exc:
        print(f"zibrato broker: {exc}", file=sys.stderr)
        return 2
    print(
        f"zibrato broker: publishers connect to {frontend}; subscribers connect to {backend}",
        flush=True,
    )
    stop.wait()
    broker.stop(timeout=1.0)  # well inside the 2 s a stop may take
    print("zibrato broker: stopped", flush=True)
    return 0


# -- tail --------------------------------------------------------------------------
def event_record(batch: Batch, event: Sequence[Any]) -> dict[str, Any]:
    """Return one event as the JSON object ``zibrato tail --json`` prints."""
    kind, name, value, source, tags = event[:5]
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
            print(
                f"zibrato tail: {subscriber.losses.lost_events} event(s) lost on the way, "
                f"bad messages: {subscriber.bad_messages}",
                file=sys.stderr,
            )
    return 0


# -- backend and run ------------------------------------------------------------------
def percentiles_arg(value: str) -> tuple[float, ...]:
    """argparse type for ``--percentiles 90,95,99``."""
    try:
        pcts = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {value!r}") from None
    if not pcts or not all(0 < p <= 100 for p in pcts):
        raise argparse.ArgumentTypeError("percentiles must be in (0, 100]")
    return pcts


def add_level_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--level`` (every level at or above it; default debug)."""
    parser.add_argument(
        "--level",
        type=level_arg,
        default=levels.DEFAULT_THRESHOLD,
        help=f"{what} (default: %(default)s)",
    )


def add_aggregation_arguments(parser: argparse.ArgumentParser) -> None:
    add_level_argument(parser, "lowest level to receive")
    parser.add_argument(
        "--flush",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL,
        metavar="SECONDS",
        help="flush interval in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--percentiles",
        type=percentiles_arg,
        default=DEFAULT_PERCENTILES,
        help="timer percentiles, comma-separated (default: 90,95,99)",
    )


def add_kind_options(parser: argparse.ArgumentParser, cls: type[Backend], prefix: str) -> None:
    """Add the options of one backend kind, each named ``--{prefix}{name}``."""
    group = parser.add_argument_group(f"{cls.kind} backend options ({cls.__name__})")
    for option in cls.options:
        flag, dest = f"--{prefix}{option.name}", f"{prefix}{option.name}".replace("-", "_")
        if option.flag:
            group.add_argument(flag, dest=dest, action="store_true", help=option.help)
        else:
            group.add_argument(
                flag,
                dest=dest,
                type=option.type,
                default=option.default,
                choices=option.choices,
                help=option.help,
            )


def make_backend(
    cls: type[Backend], args: argparse.Namespace, prefix: str, connect: str
) -> Backend:
    """Instantiate ``cls`` from parsed arguments."""
    common = {
        "connect": connect,
        "level": args.level,
        "flush_interval": args.flush,
        "percentiles": args.percentiles,
    }
    options = {o.dest: getattr(args, f"{prefix}{o.name}".replace("-", "_")) for o in cls.options}
    return cls.from_options(common, options)


def load_kind(kind: str, parser: argparse.ArgumentParser) -> type[Backend]:
    try:
        return backends.load(kind)
    except backends.UnknownBackend as exc:
        parser.error(str(exc))


def backend_parser(rest: Sequence[str]) -> tuple[argparse.ArgumentParser, type[Backend] | None]:
    """Return the parser of ``zibrato backend`` for ``rest`` (its options depend on KIND),
    and KIND's class (None when no KIND is named)."""
    kinds = argparse.ArgumentParser(add_help=False)
    kinds.add_argument("kind", nargs="?")
    kind = kinds.parse_known_args(rest)[0].kind
    parser = argparse.ArgumentParser(
        prog=f"zibrato backend {kind or 'KIND'}",
        description="Subscribe to the broker, aggregate per flush interval, and send each "
        f"rollup to a target. KIND: {', '.join(backends.BUILTIN)}, or package.module:Class.",
    )
    parser.add_argument("kind", metavar="KIND")
    parser.add_argument(
        "--connect",
        default=DEFAULT_BACKEND,
        help="the broker's backend address (default: %(default)s)",
    )
    add_aggregation_arguments(parser)
    cls = load_kind(kind, parser) if kind and not kind.startswith("-") else None
    if cls is not None:
        add_kind_options(parser, cls, "")
    return parser, cls


def run_backend(args: argparse.Namespace) -> int:
    parser, cls = backend_parser(args.rest)
    parsed = parser.parse_args(args.rest)
    if cls is None:
        parser.error("name a backend KIND")
    backend = make_backend(cls, parsed, "", parsed.connect)
    stop = stop_on_signals()
    print(
        f"zibrato backend {cls.kind}: receiving from {parsed.connect} "
        f"(level {parsed.level}+), flushing every {parsed.flush:g}s",
        flush=True,
    )
    backend.run(stop)
    return 0


def run_parser(
    rest: Sequence[str],
) -> tuple[argparse.ArgumentParser, dict[str, type[Backend]]]:
    """Return the parser of ``zibrato run`` for ``rest`` (its options depend on the backends
    named), and the class of each backend kind it may run."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", action="append", default=[])
    named = pre.parse_known_args(rest)[0].backend
    parser = argparse.ArgumentParser(
        prog="zibrato run",
        description="Run the broker and backends in one process (console when none is named). "
        "Each backend's options are prefixed with its kind, e.g. --jsonl-path.",
    )
    parser.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="KIND",
        help=f"a backend to run, repeatable: {', '.join(backends.BUILTIN)}, "
        "or package.module:Class (default: console)",
    )
    parser.add_argument(
        "--frontend",
        default=DEFAULT_FRONTEND,
        help="where publishers connect (default: %(default)s)",
    )
    parser.add_argument(
        "--backend-address",
        default=DEFAULT_BACKEND,
        help="where other subscribers connect (default: %(default)s)",
    )
    add_aggregation_arguments(parser)
    shown = named or (list(backends.BUILTIN) if {"-h", "--help"} & set(rest) else [])
    classes = {kind: load_kind(kind, parser) for kind in dict.fromkeys(shown or ["console"])}
    for kind, cls in classes.items():
        add_kind_options(parser, cls, f"{cls.kind}-" if kind in backends.BUILTIN else "")
    return parser, classes


def run_all(args: argparse.Namespace) -> int:
    parser, classes = run_parser(args.rest)
    parsed = parser.parse_args(args.rest)
    chosen = parsed.backend or ["console"]
    instances = [
        make_backend(
            classes[kind],
            parsed,
            f"{classes[kind].kind}-" if kind in backends.BUILTIN else "",
            parsed.backend_address,
        )
        for kind in chosen
    ]
    runner = Runner(instances, frontend=parsed.frontend, backend_address=parsed.backend_address)
    stop = stop_on_signals()
    try:
        frontend, backend_address = runner.start()
    except AddressInUse as exc:
        print(f"zibrato run: {exc}", file=sys.stderr)
        return 2
    print(
        f"zibrato run: publishers connect to {frontend}; subscribers to {backend_address}; "
        f"backends: {', '.join(b.kind for b in instances)}; flush every {parsed.flush:g}s",
        flush=True,
    )
    stop.wait()
    runner.stop()
    print("zibrato run: stopped", flush=True)
    return 0


# -- entry point -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zibrato", description="Zibrato: low-overhead metrics over ZeroMQ."
    )
    parser.add_argument("--version", action="version", version=f"zibrato {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser(
        "broker",
        help="forward publishers to subscribers",
        description="Run the XSUB/XPUB forwarder.",
    )
    add_broker_arguments(broker)
    broker.set_defaults(handler=run_broker)

    tail_parser = commands.add_parser(
        "tail",
        help="print live events, one per line",
        description="Print every event the broker forwards.",
    )
    tail_parser.add_argument(
        "--connect",
        default=DEFAULT_BACKEND,
        help="the broker's backend address (default: %(default)s)",
    )
    add_level_argument(tail_parser, "lowest level to show")
    tail_parser.add_argument(
        "--json", action="store_true", help="one JSON object per event instead of a text line"
    )
    tail_parser.set_defaults(handler=run_tail)

    for name, handler, summary in (
        ("backend", run_backend, "run one backend: zibrato backend KIND --help"),
        ("run", run_all, "run the broker and backends in one process: zibrato run --help"),
    ):
        # Their options depend on the backend kinds named, so they parse their own.
        sub = commands.add_parser(name, help=summary, add_help=False)
        sub.set_defaults(handler=handler, own_arguments=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "own_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
