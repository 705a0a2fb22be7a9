"""``python manage.py zibrato_broker``: the broker and the configured backends, one process."""

from __future__ import annotations

import sys
from typing import Any

from django.core.checks import CheckMessage
from django.core.management.base import BaseCommand, CommandParser

from zibrato.errors import ConfigError
from zibrato.runner import EXIT_USAGE, serve
from zibrato_django.checks import IDS, check_config
from zibrato_django.conf import build_runner, current

NAME = "zibrato_broker"
BACKENDS_ID = IDS["backends"]


class Command(BaseCommand):
    help = (
        "Run the Zibrato broker and the backends of settings.ZIBRATO['BACKENDS'] in one "
        "process, until Ctrl-C (SIGINT) or SIGTERM."
    )
    # Not Django's whole check run (a block of text and exit status 1): Zibrato's own
    # checks, below, each as one line, and exit status 2 like the zibrato command.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            action="append",
            metavar="KIND",
            help="run this backend kind (with its defaults) instead of ZIBRATO['BACKENDS']; "
            "repeatable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        messages = check_config()
        for warning in (m for m in messages if not m.is_serious()):
            print(f"{NAME}: warning: {one_line(warning)}", file=sys.stderr, flush=True)
        errors = [m for m in messages if m.is_serious()]
        if options["backend"]:  # the configured backends do not run
            errors = [m for m in errors if m.id != BACKENDS_ID]
        try:
            if errors:
                raise ConfigError(one_line(errors[0]))
            runner = build_runner(current(), kinds=options["backend"])
        except ConfigError as exc:
            print(f"{NAME}: {exc}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USAGE)
        status = serve(runner, name=NAME)
        if status:
            sys.exit(status)


def one_line(message: CheckMessage) -> str:
    """Return a check message as the one line a command prints: the problem and its id."""
    return f"{message.msg} ({message.id})"
