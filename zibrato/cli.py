"""The ``zibrato`` command: ``broker``, ``tail``, ``backend KIND`` and ``run``.

Every subcommand starts its parts through :func:`zibrato.runner.serve` and builds its
backends through :func:`zibrato.backends.build`, as the Django and Flask commands do. A
user's mistake is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import zmq

from zibrato import __version__, backends, levels
from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND
from zibrato.aggregation import DEFAULT_PERCENTILES
from zibrato.backends.base import DEFAULT_FLUSH_INTERVAL, Backend
from zibrato.errors import ConfigError
from zibrato.framework.settings import one_line, parse_setting
from zibrato.runner import EXIT_USAGE, Runner, serve, stop_on_signals
from zibrato.security.curve import CURVE_ENV
from zibrato.security.curve import resolve as resolve_curve
from zibrato.security.keygen import usage_lines, write_keys
from zibrato.tail import run_tail

COMMAND = "zibrato"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{one_line(f'{self.prog}: {message}')} (see {self.prog} --help)\n")


# -- argument types: each raises ArgumentTypeError with the whole explanation ---------------
def _argument_type(check: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            return check(value)
        except (ConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name  # argparse names the type in some messages
    return convert


# The settings core's parsers: an option and its settings key refuse a value alike.
endpoint_arg = _argument_type(lambda value: parse_setting("PUBLISH", value), "address")
bind_endpoint_arg = _argument_type(lambda value: parse_setting("BROKER_FRONTEND", value), "address")
level_arg = _argument_type(lambda value: parse_setting("LEVEL", value), "level")
curve_arg = _argument_type(lambda value: parse_setting("CURVE", value), "directory")
seconds_arg = _argument_type(backends.positive_seconds, "seconds")
percentiles_arg = _argument_type(backends.percentile_list, "percentiles")


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
        type=seconds_arg,
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
                type=_argument_type(partial(backends.option_value, option), option.name),
                default=option.default,
                choices=option.choices,
                # Not the prefixed name: --prometheus-listen HOST:PORT, not PROMETHEUS_LISTEN.
                metavar=option.metavar or (None if option.choices else option.dest.upper()),
                help=option.help,
            )


def backend_spec(
    kind: str, cls: type[Backend], args: argparse.Namespace, prefix: str
) -> dict[str, Any]:
    """Return the plain-data spec of one backend from parsed arguments (for ``build``)."""
    spec: dict[str, Any] = {"kind": kind}
    for option in cls.options:
        value = getattr(args, f"{prefix}{option.name}".replace("-", "_"))
        if value is not None:
            spec[option.name] = value
    return spec


def build_backends(
    parser: argparse.ArgumentParser,
    specs: Sequence[dict[str, Any]],
    args: argparse.Namespace,
    connect: str,
) -> list[Backend]:
    try:
        return backends.build(
            specs, connect=connect, level=args.level, flush=args.flush, percentiles=args.percentiles
        )
    except ConfigError as exc:
        parser.error(str(exc))


def load_kind(kind: str, parser: argparse.ArgumentParser) -> type[Backend]:
    try:
        return backends.load(kind)
    except backends.UnknownBackend as exc:
        parser.error(str(exc))


# -- subcommands -----------------------------------------------------------------------------
def run_broker(args: argparse.Namespace) -> int:
    if args.deprecated_backend is not None:
        print(
            f"{COMMAND} broker: --backend ADDR is deprecated, use --backend-address ADDR "
            "(--backend names a backend KIND in every other command)",
            file=sys.stderr,
            flush=True,
        )
        args.backend_address = args.deprecated_backend
    runner = Runner(
        frontend=args.frontend,
        backend_address=args.backend_address,
        curve=resolve_curve(args.curve),
        insecure=args.insecure,
    )
    return serve(runner, name=f"{COMMAND} broker")


def run_tail_command(args: argparse.Namespace) -> int:
    return run_tail(
        args.connect,
        level=args.level,
        as_json=args.json,
        stop=stop_on_signals(),
        curve=resolve_curve(args.curve),
    )


def run_keys(args: argparse.Namespace) -> int:
    written = write_keys(args.directory, client=args.client, force=args.force)
    print(f"{COMMAND} keys: wrote {', '.join(str(path) for path in written)} (mode 0600)")
    for line in usage_lines(args.directory, args.client):
        print(f"{COMMAND} keys: {line}")
    return 0


def backend_parser(rest: Sequence[str]) -> tuple[argparse.ArgumentParser, type[Backend] | None]:
    """Return the parser of ``zibrato backend`` for ``rest`` (its options depend on KIND),
    and KIND's class (None when no KIND is named)."""
    kinds = argparse.ArgumentParser(add_help=False)
    kinds.add_argument("kind", nargs="?")
    kind = kinds.parse_known_args(rest)[0].kind
    cls = None
    if kind and not kind.startswith("-"):
        cls = load_kind(kind, Parser(prog=f"{COMMAND} backend"))
    choices = f"{', '.join(backends.BUILTIN)}, or package.module:Class"
    if cls is None:
        parser = Parser(
            prog=f"{COMMAND} backend",
            usage=f"{COMMAND} backend KIND [options]",
            description="Subscribe to the broker, aggregate per flush interval, and send each "
            "rollup to one backend KIND.",
            epilog=f"`{COMMAND} backend KIND --help` adds the options of that kind.",
        )
        parser.add_argument("kind", metavar="KIND", help=f"the backend to run: {choices}")
    else:
        # KIND is part of the command shown (prog), so it is not listed again as an argument.
        parser = Parser(
            prog=f"{COMMAND} backend {kind}",
            description=f"{_summary(cls)} Subscribe to the broker, aggregate per flush "
            f"interval, and hand each rollup to the {cls.kind} backend. "
            f"`{COMMAND} backend --help` lists the other kinds.",
        )
        parser.add_argument("kind", help=argparse.SUPPRESS)
    parser.add_argument(
        "--connect",
        type=endpoint_arg,
        default=DEFAULT_BACKEND,
        metavar="ADDR",
        help="the broker's backend address (default: %(default)s)",
    )
    add_aggregation_arguments(parser)
    add_curve_argument(parser, "authenticate to a CURVE broker with the keys in DIR")
    if cls is not None:
        add_kind_options(parser, cls, "")
    return parser, cls


def _summary(cls: type[Backend]) -> str:
    """The first line of a backend class's docstring, without reST markup."""
    lines = (cls.__doc__ or "").strip().splitlines()
    return lines[0].replace("``", "") if lines else ""


def run_backend(args: argparse.Namespace) -> int:
    parser, cls = backend_parser(args.rest)
    parsed = parser.parse_args(args.rest)
    if cls is None:
        parser.error("name a backend KIND")
    (backend,) = build_backends(
        parser, [backend_spec(parsed.kind, cls, parsed, "")], parsed, parsed.connect
    )
    runner = Runner(
        [backend], backend_address=parsed.connect, broker=False, curve=resolve_curve(parsed.curve)
    )
    return serve(runner, name=parser.prog)


def run_parser(
    rest: Sequence[str],
) -> tuple[argparse.ArgumentParser, dict[str, type[Backend]]]:
    """Return the parser of ``zibrato run`` for ``rest`` (its options depend on the backends
    named), and the class of each backend kind it may run."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", action="append", default=[])
    named = pre.parse_known_args(rest)[0].backend
    parser = Parser(
        prog=f"{COMMAND} run",
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
    add_broker_arguments(parser)
    add_aggregation_arguments(parser)
    shown = named or (list(backends.BUILTIN) if {"-h", "--help"} & set(rest) else [])
    classes = {kind: load_kind(kind, parser) for kind in dict.fromkeys(shown or ["console"])}
    for kind, cls in classes.items():
        add_kind_options(parser, cls, option_prefix(kind, cls))
    return parser, classes


def run_all(args: argparse.Namespace) -> int:
    parser, classes = run_parser(args.rest)
    parsed = parser.parse_args(args.rest)
    specs = [
        backend_spec(kind, classes[kind], parsed, option_prefix(kind, classes[kind]))
        for kind in parsed.backend or ["console"]
    ]
    instances = build_backends(parser, specs, parsed, parsed.backend_address)
    runner = Runner(
        instances,
        frontend=parsed.frontend,
        backend_address=parsed.backend_address,
        curve=resolve_curve(parsed.curve),
        insecure=parsed.insecure,
    )
    return serve(runner, name=parser.prog)


def option_prefix(kind: str, cls: type[Backend]) -> str:
    """``zibrato run`` prefixes a built-in kind's options with its name (``--jsonl-path``)."""
    return f"{cls.kind}-" if kind in backends.BUILTIN else ""


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frontend",
        type=bind_endpoint_arg,
        default=DEFAULT_FRONTEND,
        metavar="ADDR",
        help="where publishers connect (default: %(default)s)",
    )
    parser.add_argument(
        "--backend-address",
        type=bind_endpoint_arg,
        default=DEFAULT_BACKEND,
        metavar="ADDR",
        help="where subscribers and backends connect (default: %(default)s)",
    )
    add_curve_argument(
        parser, "encrypt both sides; accept only the clients whose key is in DIR/authorized"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow an address beyond loopback without --curve (anyone who reaches it can "
        "publish or read metrics)",
    )


def add_curve_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--curve DIR`` (default: ``$ZIBRATO_CURVE``, else no CURVE)."""
    parser.add_argument(
        "--curve",
        metavar="DIR",
        type=curve_arg,
        help=f"CURVE security: {what} (keys from `zibrato keys DIR`; default: ${CURVE_ENV}, "
        "else none)",
    )


# -- entry point -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=COMMAND, description="Zibrato: low-overhead metrics over ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"{COMMAND} {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    broker = commands.add_parser(
        "broker",
        help="forward publishers to subscribers",
        description="Run the XSUB/XPUB forwarder.",
    )
    add_broker_arguments(broker)
    # Deprecated for one release: scripts in the wild pass the address as --backend.
    broker.add_argument(
        "--backend", dest="deprecated_backend", type=bind_endpoint_arg, help=argparse.SUPPRESS
    )
    broker.set_defaults(handler=run_broker)

    tail_parser = commands.add_parser(
        "tail",
        help="print live events, one per line",
        description="Print every event the broker forwards.",
    )
    tail_parser.add_argument(
        "--connect",
        type=endpoint_arg,
        default=DEFAULT_BACKEND,
        metavar="ADDR",
        help="the broker's backend address (default: %(default)s)",
    )
    add_level_argument(tail_parser, "lowest level to show")
    add_curve_argument(tail_parser, "authenticate to a CURVE broker with the keys in DIR")
    tail_parser.add_argument(
        "--json", action="store_true", help="one JSON object per event instead of a text line"
    )
    tail_parser.set_defaults(handler=run_tail_command)

    keys_parser = commands.add_parser(
        "keys",
        help="write CURVE keys for a broker and its clients",
        description="Write a broker key pair and a client key pair (ZeroMQ certificates, "
        "mode 0600) into DIR, created 0700 if missing; the broker accepts the client keys "
        "in DIR/authorized.",
    )
    keys_parser.add_argument("directory", metavar="DIR", help="where to write the keys")
    keys_parser.add_argument(
        "--client",
        metavar="NAME",
        help="add one more client: DIR/NAME/ holds its keys and broker.key, ready to copy "
        "to its host; DIR/authorized/NAME.key lets it in",
    )
    keys_parser.add_argument("--force", action="store_true", help="replace keys that exist already")
    keys_parser.set_defaults(handler=run_keys)

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
    prog = f"{COMMAND} {args.command}"
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except zmq.ZMQError as exc:  # an address that passed our checks but not libzmq's
        print(f"{prog}: {exc}; check the addresses given", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
