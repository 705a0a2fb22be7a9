"""``dashboard``: a live web page of routes, charts and the pipeline's health, with history.

Every flush is written to a SQLite history (``store.py``) on the flush thread, so a slow
disk never stops receiving; the page (``static/``) polls the JSON API (``api.py``) and
redraws when a new flush has landed. The HTTP server is the one prometheus uses
(``zibrato.backends.toolkit.httpserver``), on loopback by default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import ClassVar, Unpack

from zibrato.aggregation import Rollup
from zibrato.backends.base import Backend, BackendOptions, Option
from zibrato.backends.dashboard.api import DashboardApi
from zibrato.backends.dashboard.downsampling import Point, Tier, point_from_stats
from zibrato.backends.dashboard.routes import summarize_routes
from zibrato.backends.dashboard.store import (
    DEFAULT_MAX_STORED_SERIES,
    RECEIVED,
    ROUTE,
    TASK,
    HistoryStore,
    Identity,
    identity,
)
from zibrato.backends.dashboard.tasks import TASK_TAG, TaskApi, summarize_tasks
from zibrato.backends.toolkit import allowed_hosts as hosts
from zibrato.backends.toolkit.httpserver import Handler, HttpServer, Response

DEFAULT_LISTEN = "127.0.0.1:8050"
DEFAULT_PATH = "zibrato-dashboard.sqlite3"
DEFAULT_HISTORY_DAYS = 7.0
# One point per flush for the last hour, then 1-minute buckets up to 6 hours old,
# 10-minute buckets up to 2 days old, and hourly buckets up to history-days: what a
# chart of each span needs, at about 1 000 points per series (docs/dashboard.md).
RESOLUTIONS = ((0.0, 3600.0), (60.0, 6 * 3600.0), (600.0, 2 * 86400.0), (3600.0, math.inf))

# Everything the page loads comes from this server; nothing inline, nothing framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/tasks.js": ("tasks.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/static/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/static/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8"),
    "/static/uPlot.LICENSE.txt": ("uPlot.LICENSE.txt", "text/plain; charset=utf-8"),
}


def history_tiers(days: float) -> tuple[Tier, ...]:
    """Return the tiers that keep ``days`` of history at the ``RESOLUTIONS``."""
    total = days * 86400
    if not total > 0:
        raise ValueError(f"history-days must be a positive number of days, not {days!r}")
    tiers = []
    for step, keep in RESOLUTIONS:
        tiers.append(Tier(step, min(keep, total)))
        if keep >= total:
            break
    return tuple(tiers)


def rollup_points(rollup: Rollup) -> Iterator[tuple[Identity, Point]]:
    """Yield every point one rollup stores: each series, then each route and task summary."""
    ts = rollup.timestamp
    for series in rollup.series:
        key = identity(RECEIVED, series.name, series.type, series.source, series.tags)
        yield key, point_from_stats(series.type, series.stats, ts)
    for summary in summarize_routes(rollup.series):
        key = identity(ROUTE, summary.name, summary.type, None, summary.tags)
        yield key, point_from_stats(summary.type, summary.stats, ts)
    for task in summarize_tasks(rollup.series):
        key = identity(TASK, task.name, task.type, None, {TASK_TAG: task.task})
        yield key, point_from_stats(task.type, task.stats, ts)


class DashboardBackend(Backend):
    """Serve a live dashboard on ``http://LISTEN/`` and keep its history in ``path``.

    >>> backend = DashboardBackend(connect="tcp://127.0.0.1:5551", listen="127.0.0.1:0",
    ...                            path="/tmp/history.sqlite3")
    >>> backend.start(); print(backend.url)               # doctest: +SKIP
    http://127.0.0.1:40123/
    >>> backend.stop()                                    # doctest: +SKIP
    """

    kind = "dashboard"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "listen",
            "where to serve the dashboard (default: %(default)s)",
            default=DEFAULT_LISTEN,
            metavar="HOST:PORT",
        ),
        Option("allowed-hosts", hosts.OPTION_HELP, hosts.parse_allowed_hosts, metavar="NAMES"),
        Option(
            "path",
            "SQLite file that keeps the history (default: %(default)s, in the current directory)",
            default=DEFAULT_PATH,
            metavar="FILE",
        ),
        Option(
            "history-days",
            "days of history to keep (default: %(default)s)",
            type=float,
            default=DEFAULT_HISTORY_DAYS,
            metavar="DAYS",
        ),
    )

    def __init__(
        self,
        *,
        listen: str = DEFAULT_LISTEN,
        allowed_hosts: str | Iterable[str] | None = None,
        path: str = DEFAULT_PATH,
        history_days: float = DEFAULT_HISTORY_DAYS,
        tiers: Sequence[Tier] | None = None,
        max_stored_series: int = DEFAULT_MAX_STORED_SERIES,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        self.store = HistoryStore(
            path, tiers=tiers or history_tiers(history_days), max_series=max_stored_series
        )
        self.api = DashboardApi(self.store, flush_interval=self.flush_interval)
        routes = self.api.routes()
        routes.update(TaskApi(self.api, self.store).routes())
        routes.update((path, self._static(*spec)) for path, spec in _STATIC.items())
        self._http = HttpServer(
            listen,
            routes,
            name=self.kind,
            headers=SECURITY_HEADERS,
            allowed_hosts=allowed_hosts,
            not_found="not found: the dashboard is at /\n",
        )
        self.url = self._http.url("/")
        tiers = self.store.tiers
        # As often as the finest bucket fills (or a tenth of the only tier's keep).
        self._compact_every = tiers[1].step if len(tiers) > 1 else tiers[0].keep / 10
        self._next_compaction = 0.0

    def __repr__(self) -> str:
        return f"<DashboardBackend connect={self.connect!r} url={self.url!r}>"

    @staticmethod
    def _static(filename: str, content_type: str) -> Handler:
        static = resources.files("zibrato.backends.dashboard").joinpath("static")
        response = Response(
            200, static.joinpath(filename).read_bytes(), content_type, {"Cache-Control": "no-cache"}
        )
        return lambda request: response

    # -- running -----------------------------------------------------------------------
    def start(self) -> None:
        """Open the history, serve the page, then start receiving."""
        self.store.open()
        try:
            self._http.start()
            self.url = self._http.url("/")
            super().start()
        except BaseException:
            self.close_target()
            raise

    def describe(self) -> str:
        return f"serving {self.url} (history in {os.path.abspath(self.store.path)})"

    def close_target(self) -> None:
        self._http.stop()
        self.store.close()

    def target_counters(self) -> Mapping[str, float]:
        http = {f"http_{name}": count for name, count in self._http.counters().items()}
        return {
            "history_capped_points": self.store.capped_points,
            "history_failed_points": self.store.failed_points,
            **http,
        }

    # -- storing -----------------------------------------------------------------------
    def emit(self, rollup: Rollup) -> None:
        self.store.write(rollup.timestamp, rollup.interval, rollup_points(rollup))
        # Compaction follows the flushes' own clock, so history replayed in a test or a
        # benchmark ages exactly as it would live.
        if rollup.timestamp >= self._next_compaction:
            self._next_compaction = rollup.timestamp + self._compact_every
            self.store.compact(rollup.timestamp)
