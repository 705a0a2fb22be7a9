"""Helpers the dashboard tests share: what a web framework records per request (published,
or as raw events emitted straight into a dashboard), reading the JSON API over real HTTP,
and waiting for it with a deadline.

Imported by the test modules (``from dashboard_support import ...``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from zibrato import Zibrato
from zibrato.aggregation import Aggregator, Rollup
from zibrato.backends.dashboard import DashboardBackend

REQUEST = "http.server.request.duration"
VIEW = "http.server.view.duration"
QUERIES = "db.client.request.queries"
DUPLICATES = "db.client.request.duplicates"
DB_TIME = "db.client.request.duration"
BREAKDOWN = "http.server.request.breakdown"
REPEATS = "db.client.statement.repeats"
WAIT = 15.0
Event = tuple[int, str, float | str, str | None, dict[str, str]]


def request_events(
    route: str,
    seconds: float,
    *,
    status: str = "200",
    view: float | None = None,
    queries: int | None = None,
    duplicates: int = 0,
) -> list[Event]:
    """The raw events one request leaves (kind 3: timer, 4: distribution)."""
    tags = {"http.route": route, "http.request.method": "GET", "http.response.status_code": status}
    events: list[Event] = [(3, REQUEST, seconds, None, tags)]
    if view is not None:
        events.append((3, VIEW, view, None, {"http.route": route, "http.request.method": "GET"}))
    if queries is not None:
        events.append((4, QUERIES, queries, None, {"http.route": route, "db.namespace": "default"}))
        events.append((4, DUPLICATES, duplicates, None, {"http.route": route}))
    return events


def breakdown_events(route: str, parts: Mapping[str, float]) -> list[Event]:
    """The breakdown events of one request: seconds per component (``app`` included)."""
    return [
        (3, BREAKDOWN, seconds, None, {"http.route": route, "component": component})
        for component, seconds in parts.items()
    ]


def statement_tags(
    route: str, text: str, file: str, line: int, function: str, template: str | None = None
) -> dict[str, str]:
    """The tags of one repeated statement, as the adapters record it."""
    tags = {
        "http.route": route,
        "db.namespace": "default",
        "db.query.text": text,
        "code.file.path": file,
        "code.line.number": str(line),
        "code.function.name": function,
    }
    if template is not None:
        tags["template.name"], tags["template.line.number"] = template, "7"
    return tags


def emit(backend: DashboardBackend, ts: float, interval: float, events: Iterable[Event]) -> Rollup:
    """Aggregate ``events`` as one flush ending at ``ts`` and store it in ``backend``."""
    aggregator = Aggregator()
    aggregator.add_events(list(events))
    rollup = aggregator.rollup(now=ts, interval=interval)
    backend.emit(rollup)
    return rollup


def record_request(
    z: Zibrato,
    route: str,
    seconds: float,
    *,
    view: float | None = None,
    status: int = 200,
    error: str | None = None,
    queries: int | None = None,
    duplicates: int = 0,
    method: str = "GET",
    breakdown: Mapping[str, float] | None = None,
    repeats: Iterable[tuple[dict[str, str], int]] = (),
) -> None:
    """Record one request the way the Django and Flask adapters do (DESIGN §4), with
    where its time went and its repeated statements when given."""
    tags = {
        "http.route": route,
        "http.request.method": method,
        "http.response.status_code": str(status),
    }
    view_tags = {"http.route": route, "http.request.method": method}
    if error is not None:
        tags["error.type"] = view_tags["error.type"] = error
    z.timing(REQUEST, seconds, tags=tags)
    if view is not None:
        z.timing(VIEW, view, tags=view_tags)
    if queries is not None:
        db_tags = {"http.route": route, "db.namespace": "default"}
        z.observe(QUERIES, queries, tags=db_tags)
        z.observe(DUPLICATES, duplicates, tags={"http.route": route})
        z.timing(DB_TIME, seconds / 3, tags=db_tags)
    for _, name, value, _, event_tags in breakdown_events(route, breakdown or {}):
        z.timing(name, float(value), tags=event_tags)
    for statement, runs in repeats:
        z.observe(REPEATS, runs, tags=statement)


@dataclass
class LiveSite:
    """A dashboard receiving from a real broker, and a client publishing to that broker."""

    dashboard: DashboardBackend
    client: Zibrato
    frontend: str

    def api(self, path: str, **params: Any) -> Any:
        return get_json(self.dashboard, path, **params)


def get_json(dashboard: DashboardBackend, path: str, **params: Any) -> Any:
    """GET ``path`` on the dashboard; assert a 200 JSON answer and return it parsed."""
    with requests.get(dashboard.url.rstrip("/") + path, params=params, timeout=10) as response:
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["Content-Type"] == "application/json"
        return response.json()


def wait_for(
    fetch: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = WAIT
) -> Any:
    """Call ``fetch`` until ``done(result)`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {result!r}")
        time.sleep(0.05)


def routes_by_name(answer: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["route"]: row for row in answer["routes"]}
