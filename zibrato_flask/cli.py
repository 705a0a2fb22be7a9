"""``flask zibrato broker`` and ``flask zibrato tail``: the core's commands, with the app's config.

The group is a Flask CLI plugin (the ``flask.commands`` entry point), so that it exists
even when loading the app fails: a setting that cannot work is then one line and exit
status 2 from the command, not a traceback from Flask's app loader.

``broker`` runs the broker and the backends of ``ZIBRATO_BACKENDS`` (or those named with
``--backend KIND``) through :func:`zibrato.runner.serve`, the serve loop every front end
shares: it says where each part listens, stops on SIGINT or SIGTERM with a final flush,
and turns a mistake (an address in use, a bad backend) into one line and exit status 2.
``tail`` prints the events the broker forwards (:func:`zibrato.tail.run_tail`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click
from flask import current_app
from flask.cli import AppGroup

from zibrato import backends, levels
from zibrato.errors import ConfigError
from zibrato.framework.settings import Settings, parse_setting
from zibrato.runner import EXIT_USAGE, Runner, serve, stop_on_signals
from zibrato.tail import run_tail

GROUP = "flask zibrato"


class OneLineErrors(click.Command):
    """A command whose usage mistakes are one line on stderr and exit status 2."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            fail(f"{GROUP} {info_name}", f"{exc.format_message()} (see --help)")

    def invoke(self, ctx: click.Context) -> Any:
        # Loading the app runs init_app, the start-up check of its ZIBRATO_* settings.
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(f"{GROUP} {ctx.info_name}", str(exc))


def fail(prog: str, message: str) -> NoReturn:
    """Print ``PROG: MESSAGE`` on stderr and exit with status 2."""
    click.echo(f"{prog}: {message}", err=True)
    sys.exit(EXIT_USAGE)


def app_settings(prog: str) -> Settings:
    """Return the current app's checked Zibrato settings, or fail if it has none."""
    state = current_app.extensions.get("zibrato")
    if state is None:
        fail(prog, "this app does not use zibrato_flask: add Zibrato(app) or init_app(app)")
    settings: Settings = state.settings
    return settings


zibrato_command = AppGroup("zibrato", help="Zibrato's broker and live tail, with this app's config")


@zibrato_command.command("broker", cls=OneLineErrors)
@click.option(
    "--backend",
    "kinds",
    multiple=True,
    metavar="KIND",
    help=f"run this backend instead of ZIBRATO_BACKENDS, repeatable: {', '.join(backends.BUILTIN)}"
    " or package.module:Class",
)
def broker_command(kinds: tuple[str, ...]) -> None:
    """Run the broker and the backends of ZIBRATO_BACKENDS until Ctrl-C or SIGTERM."""
    prog = f"{GROUP} broker"
    settings = app_settings(prog)
    specs: list[Mapping[str, Any]] = [{"kind": kind} for kind in kinds]
    specs = specs or list(settings.backends)
    try:
        built = backends.build(specs, connect=settings.broker_backend_address)
    except ConfigError as exc:
        fail(prog, str(exc))
    runner = Runner(
        built,
        frontend=settings.broker_frontend,
        backend_address=settings.broker_backend_address,
        curve=settings.curve,
        insecure=settings.insecure,
    )
    sys.exit(serve(runner, name=prog))


@zibrato_command.command("tail", cls=OneLineErrors)
@click.option(
    "--connect",
    metavar="ADDRESS",
    help="the broker's backend address (default: ZIBRATO_BROKER_BACKEND_ADDRESS)",
)
@click.option(
    "--level",
    default=levels.DEFAULT_THRESHOLD,
    show_default=True,
    help=f"lowest level to show: {', '.join(levels.LEVELS)}",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event")
def tail_command(connect: str | None, level: str, as_json: bool) -> None:
    """Print every event the broker forwards, one per line, until Ctrl-C."""
    prog = f"{GROUP} tail"
    settings = app_settings(prog)
    try:
        address = parse_setting("PUBLISH", connect) if connect else settings.tail_address
        level = parse_setting("LEVEL", level)
    except ConfigError as exc:
        fail(prog, str(exc))
    try:
        status = run_tail(
            address,
            level=level,
            as_json=as_json,
            stop=stop_on_signals(),
            name=prog,
            curve=settings.curve,
        )
    except ConfigError as exc:  # the keys went away since the app was set up
        fail(prog, str(exc))
    sys.exit(status)
