"""Every endpoint of the dashboard's API answers any query string a client may send.

The query strings are sent byte for byte over a raw socket to a real dashboard holding
history: huge values, hundreds of parameters, repeated names, percent-escapes of bytes
that are not UTF-8, raw Latin-1 bytes, non-ASCII digits, NaN, infinities and 1e308 where
numbers are expected. Each must get an HTTP answer (never a dropped connection): a 200
with JSON, or a 400 whose JSON error is one line; never a 500. (A request line over
64 KiB is a 414 before any endpoint sees it.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest
from dashboard_support import emit, request_events
from http_support import Answer, raw_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zibrato.backends.dashboard import DashboardBackend

ENDPOINTS = (
    "/api/status",
    "/api/routes",
    "/api/route",
    "/api/statements",
    "/api/metrics",
    "/api/series",
    "/api/health",
    "/api/tasks",
    "/api/task",
)
NAMES = ("window", "end", "route", "name", "stat", "tag", "type", "task", "x", "", "window[]")
NUMBERS = (
    "300",
    "0",
    "-1",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "1e308",
    "-1e308",
    "1e-320",
    "\u00b2",  # superscript two
    "\u0663\u0660\u0660",  # Arabic-Indic 300
    "\uff13\uff10\uff10",  # full-width 300
    "1_000",
    "0x10",
    " 300",
    "9" * 400,
)
LONGEST_TARGET = 65_536 - len("GET  HTTP/1.1\r\n")
TEXTS = ("/products/", "http.server.request.duration", "p95", "http.route=/products/", "timer")


def _encoded(text: str) -> str:
    return quote(text, safe="", encoding="utf-8")


# A value: one of the above, percent-encoded as a browser would, or raw bytes that are
# not UTF-8 (percent-escaped or sent as Latin-1), or any text, or something huge.
VALUES = st.one_of(
    st.sampled_from(NUMBERS).map(_encoded),
    st.sampled_from(TEXTS).map(_encoded),
    st.binary(max_size=12).map(lambda raw: "".join(f"%{byte:02X}" for byte in raw)),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_categories=("Cc", "Zs")),
        max_size=20,
    ).map(lambda text: text.replace("#", "%23")),
    st.text(max_size=20).map(_encoded),
    st.integers(min_value=1_000, max_value=20_000).map(lambda size: "v" * size),
)
PAIRS = st.tuples(st.sampled_from(NAMES), VALUES).map(lambda pair: f"{pair[0]}={pair[1]}")
QUERIES = st.one_of(
    st.lists(PAIRS, max_size=8).map("&".join),
    # many parameters, some past the limit of 100, the same name repeated
    st.tuples(st.integers(min_value=1, max_value=300), PAIRS).map(
        lambda count_pair: "&".join([count_pair[1]] * count_pair[0])
    ),
    st.just("&" * 150),
    st.just("=" * 500),
)


@pytest.fixture
def stocked(make_dashboard: Callable[..., DashboardBackend]) -> DashboardBackend:
    """A dashboard with three flushes of history, so that every endpoint has work to do."""
    backend = make_dashboard(flush_interval=10.0)
    now = time.time()
    for ts in (now - 20, now - 10, now):
        events = request_events("/products/", 0.03, view=0.02, queries=12, duplicates=10)
        events += request_events("/boom/", 0.01, status="500")
        events.append((0, "zibrato.publisher.dropped", 1, "web-1", {"reason": "no_broker"}))
        emit(backend, ts, 10.0, events)
    return backend


def check_answer(answer: Answer, target: str) -> None:
    if len(target) > LONGEST_TARGET:  # http.server's own limit on the request line
        assert answer.status == 414 and answer.body == b"414 Request-URI Too Long\n"
        return
    assert answer.status in (200, 400), (answer.status, answer.body[:300], target[:300])
    assert answer.headers["content-type"] == "application/json", target[:300]
    data = json.loads(answer.body)  # strict JSON: NaN or Infinity would fail here
    if answer.status == 400:
        assert set(data) == {"error"} and "\n" not in data["error"], data
        assert len(data["error"]) < 300, data


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.sampled_from(ENDPOINTS), QUERIES)
def test_any_query_string_gets_a_json_answer(
    stocked: DashboardBackend, endpoint: str, query: str
) -> None:
    target = f"{endpoint}?{query}"
    answer = raw_request(stocked._http, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    check_answer(answer, target)


def test_every_endpoint_with_the_numbers_nobody_should_send(stocked: DashboardBackend) -> None:
    for endpoint in ENDPOINTS:
        for number in NUMBERS:
            for name in ("window", "end"):
                target = f"{endpoint}?{name}={_encoded(number)}&route=/boom/&name=orders&task=t"
                answer = raw_request(stocked._http, f"GET {target} HTTP/1.0\r\n\r\n")
                check_answer(answer, target)
                if endpoint not in ("/api/status", "/api/metrics") and number not in (
                    "300",
                    "0",
                    "1e-320",
                    "-1",
                    "1e308",
                    "-1e308",
                ):
                    assert "must be a number" in answer.json()["error"], (target, answer)
