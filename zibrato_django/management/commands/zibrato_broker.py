"""``python manage.py zibrato_broker``: the broker and the configured backends, one process."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from zibrato.errors import ConfigError
from zibrato.runner import EXIT_USAGE, serve
from zibrato_django.conf import build_runner, get_config

NAME = "zibrato_broker"


class Command(BaseCommand):
    help = (
        "Run the Zibrato broker and the backends of settings.ZIBRATO['BACKENDS'] in one "
        "process, until Ctrl-C (SIGINT) or SIGTERM."
    )
    # Our own validation gives one line and exit status 2, like the zibrato command.
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
        try:
            runner = build_runner(get_config(), kinds=options["backend"])
        except ConfigError as exc:
            print(f"{NAME}: {exc}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USAGE)
        status = serve(runner, name=NAME)
        if status:
            sys.exit(status)
