"""``make run``: the whole demo in one command, ``python -m demo_site.run``.

In this process, through the same serve loop as ``zibrato run``: the broker and three
backends (the dashboard, prometheus, a short console summary). As child processes: the
recommendation service the shop calls over HTTP, the Django shop and the Flask
warehouse, each under gunicorn with several worker processes, the shop's Celery worker,
and the traffic generator. Prints where everything is and what to open first; Ctrl-C or
SIGTERM (or ``--seconds`` / ``$ZIBRATO_DEMO_SECONDS``) stops every part, a final flush
included. Every address is an option, so tests run it on ports the system picks (``:0``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import requests

from demo_site import prepare
from demo_site.children import RUN_ENV, Child, new_marker, stop_all
from demo_site.options import CONSOLE_EVERY, DemoSettings, parse_settings
from demo_site.paths import DATA_ENV
from demo_site.sites import WebSite, listening_socket
from zibrato import backends
from zibrato.backends.dashboard import DashboardBackend
from zibrato.backends.toolkit.httpserver import base_url
from zibrato.client import PUBLISH_ENV
from zibrato.errors import ConfigError
from zibrato.runner import EXIT_USAGE, Runner, serve, stop_on_signals

NAME = "zibrato demo"
# The console's short summary: what the traffic got, what raised, the 2013-API metrics.
CONSOLE_NAMES = "demo.traffic.requests,http.server.exceptions,shop.report.*"
EXIT_INTERRUPTED = 130
# Where the shop finds the recommendation service (demo_site/settings.py reads it).
RECOMMENDATIONS_ENV = "ZIBRATO_DEMO_RECOMMENDATIONS"
SERVICE_READY_TIMEOUT = 20.0
WORKER_PROCESSES = 2  # the Celery worker's prefork children


def backend_specs(settings: DemoSettings) -> list[dict[str, Any]]:
    """Return the backends the demo's broker runs, as ``zibrato.backends.build`` takes them."""
    return [
        {
            "kind": "dashboard",
            "listen": settings.dashboard_listen,
            "path": str(settings.data / "dashboard.sqlite3"),
        },
        {"kind": "prometheus", "listen": settings.prometheus_listen},
        {"kind": "console", "names": CONSOLE_NAMES, "flush": settings.flush * CONSOLE_EVERY},
    ]


class DemoRunner(Runner):
    """The broker and backends (a :class:`~zibrato.runner.Runner`), plus the sites and the
    traffic as child processes: started after the broker, stopped before it.

    ``stop`` is the event that ends the run: once it is set, start() stops waiting for
    the sites (a Ctrl-C during startup is not an error).
    """

    def __init__(self, settings: DemoSettings, *, stop: threading.Event) -> None:
        parts = backends.build(
            backend_specs(settings), connect=settings.backend_address, flush=settings.flush
        )
        super().__init__(
            parts, frontend=settings.frontend, backend_address=settings.backend_address
        )
        self.settings = settings
        self.stop_event = stop
        self.dashboard = next(part for part in parts if isinstance(part, DashboardBackend))
        self.sites = [
            WebSite(
                key="django",
                title="Django shop",
                app="demo_site.wsgi:application",
                listen=settings.django_listen,
                workers=settings.workers,
                logs=settings.logs,
            ),
            WebSite(
                key="flask",
                title="Flask warehouse",
                app="demo_site.warehouse:create_app()",
                listen=settings.flask_listen,
                workers=settings.workers,
                logs=settings.logs,
            ),
        ]
        self.children: list[Child] = []
        self.recommendations_url = ""
        # In every child's environment: what this run started, orphans included.
        self.marker = new_marker()

    def start(self) -> tuple[str, str]:
        """Start the broker and backends, then the sites (until they answer), then traffic."""
        frontend, backend_address = super().start()
        try:
            env = {PUBLISH_ENV: frontend, DATA_ENV: str(self.settings.data), RUN_ENV: self.marker}
            env[RECOMMENDATIONS_ENV] = self.start_recommendation_service(env)
            for site in self.sites:
                self.children.append(site.start(env))
            self.children.append(start_worker(self.settings, env))
            for site in self.sites:
                site.wait_until_answering(self.stop_event)
            if self.stop_event.is_set():  # Ctrl-C while the sites were starting
                return frontend, backend_address
            traffic = Child(
                "traffic",
                [
                    sys.executable,
                    "-m",
                    "demo_site.traffic",
                    f"--rate={self.settings.rate:g}",
                    *(f"--{site.key}={site.url}" for site in self.sites),
                ],
                log_path=self.settings.logs / "traffic.log",
                env=env,
            )
            self.children.append(traffic)
            traffic.start()
        except BaseException:
            self.stop()
            raise
        return frontend, backend_address

    def start_recommendation_service(self, env: dict[str, str]) -> str:
        """Start the recommendation service the shop calls; return its URL once it answers."""
        listener = listening_socket(
            self.settings.recommendations_listen,
            what="the recommendation service",
            option="--recommendations-listen",
        )
        with listener:
            self.recommendations_url = base_url(*listener.getsockname()[:2])
            service = Child(
                "recommendation service",
                [sys.executable, "-m", "demo_site.recommendations", f"--fd={listener.fileno()}"],
                log_path=self.settings.logs / "recommendations.log",
                env=env,
                pass_fds=[listener.fileno()],
            )
            self.children.append(service)
            service.start()
        deadline = time.monotonic() + SERVICE_READY_TIMEOUT
        while not self.stop_event.is_set():
            try:
                requests.get(self.recommendations_url + "/health", timeout=2).close()
                break
            except requests.RequestException:
                if not service.running or time.monotonic() > deadline:
                    raise ConfigError(
                        f"the recommendation service did not answer at "
                        f"{self.recommendations_url}: {service.log_tail()}"
                    ) from None
            self.stop_event.wait(0.1)
        return self.recommendations_url

    def stop(self, timeout: float = 1.5) -> None:
        """Stop the children (bounded, nothing left behind), then the backends and broker."""
        stop_all(self.children, marker=self.marker)
        super().stop(timeout)

    def failure(self) -> str | None:
        """Also say when a site or the traffic generator has exited by itself."""
        for child in self.children:
            code = child.returncode
            if code is not None:
                how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                return f"the {child.name} stopped by itself ({how}; log in {child.log_path})"
        return super().failure()

    def describe(self) -> list[str]:
        lines = super().describe()
        for site in self.sites:
            lines.append(
                f"{site.title}: {site.url} (gunicorn, {site.workers} worker processes; "
                f"log in {site.log_path})"
            )
        lines.append(
            f"recommendation service: {self.recommendations_url}/recommendations (the shop's "
            f"recommendations/ page calls it; log in {self.settings.logs / 'recommendations.log'})"
        )
        lines.append(
            f"Celery worker: the shop's order confirmations, prefork, {WORKER_PROCESSES} "
            f"processes, on a SQLite queue (log in {self.settings.logs / 'worker.log'})"
        )
        lines.append(
            f"traffic: about {self.settings.rate:g} requests/s to the sites "
            f"(log in {self.settings.logs / 'traffic.log'})"
        )
        lines.append(
            f"open first: the dashboard, {self.dashboard.url} (routes, charts, the "
            f"pipeline's health); then the shop, {self.sites[0].url}"
        )
        if self.settings.seconds:
            lines.append(f"stopping by itself after {self.settings.seconds:g} s")
        return lines


def start_worker(settings: DemoSettings, env: dict[str, str]) -> Child:
    """Start the shop's Celery worker (demo_site/worker.py), prefork, on the SQLite queue."""
    worker = Child(
        "Celery worker",
        [
            *(sys.executable, "-m", "celery", "-A", "demo_site.worker", "worker"),
            *("--pool=prefork", f"--concurrency={WORKER_PROCESSES}", "--loglevel=warning"),
            *("--without-mingle", "--without-gossip", "--without-heartbeat"),
        ],
        log_path=settings.logs / "worker.log",
        env=env,
    )
    worker.start()
    return worker


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    try:
        if not prepare.is_current(settings.data):
            print(f"{NAME}: preparing the demo databases in {settings.data} (once)", flush=True)
        prepare.prepare(settings.data)
    except prepare.PrepareError as exc:
        print(f"{NAME}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    stop = stop_on_signals()
    if settings.seconds:
        timer = threading.Timer(settings.seconds, stop.set)
        timer.daemon = True
        timer.start()
    try:
        runner = DemoRunner(settings, stop=stop)
    except ValueError as exc:  # a backend option that cannot work (ConfigError included)
        print(f"{NAME}: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    return serve(runner, name=NAME, stop=stop)


if __name__ == "__main__":
    raise SystemExit(main())
