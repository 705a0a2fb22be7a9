"""The demo runner's options: every address, the pace, the data folder.

``python -m demo_site.run --help`` lists them. Every address takes port 0 (tests use it),
and a mistake is one line and exit status 2, as with the ``zibrato`` command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from demo_site.paths import DATA_ENV, data_dir
from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND
from zibrato.backends.toolkit.httpserver import parse_listen
from zibrato.cli import Parser, bind_endpoint_arg, seconds_arg

SECONDS_ENV = "ZIBRATO_DEMO_SECONDS"
DEFAULT_FLUSH = 5.0
DEFAULT_RATE = 20.0
DEFAULT_WORKERS = 2
CONSOLE_EVERY = 3  # the console prints a summary every third flush: a glance, not a log
# What listens where, as (key, what): each is a --KEY-listen option and a settings field.
LISTENERS = (
    ("django", "the Django shop"),
    ("flask", "the Flask warehouse"),
    ("dashboard", "the dashboard"),
    ("prometheus", "prometheus' /metrics"),
    ("recommendations", "the recommendation service the shop calls"),
)


@dataclass(frozen=True)
class DemoSettings:
    """Everything one run of the demo needs: addresses, pace, and the data folder."""

    data: Path
    frontend: str = DEFAULT_FRONTEND
    backend_address: str = DEFAULT_BACKEND
    django_listen: str = "127.0.0.1:8000"
    flask_listen: str = "127.0.0.1:8001"
    dashboard_listen: str = "127.0.0.1:8050"
    prometheus_listen: str = "127.0.0.1:9102"
    recommendations_listen: str = "127.0.0.1:8002"
    flush: float = DEFAULT_FLUSH
    workers: int = DEFAULT_WORKERS
    rate: float = DEFAULT_RATE
    seconds: float = 0.0

    @property
    def logs(self) -> Path:
        return self.data / "logs"


def parse_settings(argv: Sequence[str] | None = None) -> DemoSettings:
    """Return the settings from the command line (exit status 2 and one line if wrong)."""
    args = build_parser().parse_args(argv)
    return DemoSettings(**{**vars(args), "data": args.data.resolve()})


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m demo_site.run",
        description="Run the Zibrato demo: broker, dashboard, prometheus, console, the "
        "Django and Flask demo sites and their traffic, until Ctrl-C.",
    )
    _add_addresses(parser)
    _add_pace(parser)
    parser.add_argument(
        "--data",
        type=Path,
        default=data_dir(),
        metavar="DIR",
        help=f"the databases, history and logs (default: ${DATA_ENV}, else %(default)s)",
    )
    return parser


def _add_addresses(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frontend",
        type=bind_endpoint_arg,
        default=DEFAULT_FRONTEND,
        help="where publishers connect (default: %(default)s)",
    )
    parser.add_argument(
        "--backend-address",
        type=bind_endpoint_arg,
        default=DEFAULT_BACKEND,
        help="where backends connect (default: %(default)s)",
    )
    defaults = DemoSettings(data=Path())
    for key, what in LISTENERS:
        parser.add_argument(
            f"--{key}-listen",
            type=_listen,
            default=getattr(defaults, f"{key}_listen"),
            metavar="HOST:PORT",
            help=f"where {what} listens (default: %(default)s)",
        )


def _add_pace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flush",
        type=seconds_arg,
        default=DEFAULT_FLUSH,
        metavar="SECONDS",
        help="flush interval of the dashboard and prometheus (default: %(default)s); "
        f"the console prints every {CONSOLE_EVERY} flushes",
    )
    parser.add_argument(
        "--workers",
        type=_count,
        default=DEFAULT_WORKERS,
        help="gunicorn worker processes per site (default: %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        help="requests per second of demo traffic (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=os.environ.get(SECONDS_ENV, "0"),
        help=f"stop after N seconds (default: ${SECONDS_ENV}, else never)",
    )


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return int(value)


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = 0.0
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of requests per second, not {value!r}")
    return rate


def _seconds(value: str) -> float:
    try:
        seconds = float(value or 0)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds (0: run until stopped), from --seconds or "
            f"${SECONDS_ENV}, not {value!r}"
        )
    return seconds
