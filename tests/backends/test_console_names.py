"""The console's ``names`` option: a short summary of chosen series, losses always shown."""

from __future__ import annotations

import io
import re

import pytest

from zibrato.backends import BackendConfigError, build
from zibrato.backends.console import ConsoleBackend

NOWHERE = "tcp://127.0.0.1:1"  # never connected: flushed by hand
EVENTS = [
    (0, "orders.placed", 2, "web-1", None),
    (0, "orders.cancelled", 1, "web-1", None),
    (3, "http.server.request.duration", 0.02, "web-1", {"http.route": "/"}),
    (3, "http.server.view.duration", 0.01, "web-1", {"http.route": "/"}),
    (1, "queue.depth", 7, None, None),
    (0, "bad name", 1, None, None),  # dropped by the aggregator: a loss to show
]


def names_shown(names: str | None) -> set[str]:
    out = io.StringIO()
    backend = ConsoleBackend(connect=NOWHERE, stream=out, names=names)
    backend.aggregator.add_events(EVENTS)
    backend.flush()
    return set(re.findall(r"^([a-z][\w.]+) ", out.getvalue(), re.M)) - {
        "counter",
        "gauge",
        "timer",
    }


def test_names_keeps_only_the_matching_series_and_every_loss() -> None:
    assert names_shown("orders.placed, http.server.request.*") == {
        "orders.placed",
        "http.server.request.duration",
        "zibrato.backend.bad_events",
    }
    assert names_shown("*.duration") == {
        "http.server.request.duration",
        "http.server.view.duration",
        "zibrato.backend.bad_events",
    }


@pytest.mark.parametrize("names", [None, "", " , "])
def test_no_pattern_shows_everything(names: str | None) -> None:
    assert names_shown(names) == {
        "orders.placed",
        "orders.cancelled",
        "http.server.request.duration",
        "http.server.view.duration",
        "queue.depth",
        "zibrato.backend.bad_events",
    }


def test_names_from_plain_data_and_in_the_startup_line() -> None:
    (backend,) = build([{"KIND": "console", "NAMES": "orders.*,queue.depth"}], connect=NOWHERE)
    assert isinstance(backend, ConsoleBackend)
    assert backend.names == ("orders.*", "queue.depth")
    assert backend.describe() == "printing a table of orders.*,queue.depth to standard output"
    (listed,) = build([{"kind": "console", "names": ["orders.*", "queue.depth"]}])
    assert isinstance(listed, ConsoleBackend) and listed.names == backend.names
    with pytest.raises(BackendConfigError, match=r"^console backend: option .names. must be a str"):
        build([{"kind": "console", "names": 3}], connect=NOWHERE)
