"""``librato``: post rollups to the legacy Librato v1 API (``POST {url}/v1/metrics``).

Every series goes out as a gauge measurement, as the 2013 Zibrato sent them:
counters as ``value`` = the sum over the flush interval (not a running total); gauges as
``value``; sets as ``value`` = their number of distinct members in the interval;
timers and distributions as summary gauges with ``count``, ``sum``, ``min``,
``max`` and ``sum_squares`` (timer values in seconds). Each has ``measure_time`` (the
flush, whole seconds) and ``source``: the series' own, else the ``source`` option, else none.

The legacy API has no tags, so tags are folded into the name, sorted by key, as
``.KEY_VALUE``: ``http.requests`` tagged ``{"status": "200"}`` becomes
``http.requests.status_200``. Characters Librato does not allow in names and sources
(outside ``[A-Za-z0-9.:_-]``) become ``_``; a name longer than 255 characters is cut and
ends with a short hash of the whole, so different long names stay different.

Delivery: at most 300 measurements per POST, each request with a timeout. 429, 5xx,
timeouts and connection errors are retried with jittered exponential backoff, waiting at
least ``Retry-After`` seconds, but never past the time left before the next flush: what
is not delivered by then stays buffered for the next flush (and a ``Retry-After`` longer
than that holds sending until it has passed). A 400 splits the batch in halves until the
rejected points are isolated: those are dropped and counted (``rejected_measurements``),
the rest delivered. 401 and 403 are not retried: logged once, counted, and sending stops
until the next flush. A redirect (30x) is not followed either, as requests would turn
the POST into a GET without the measurements: it is a counted failure whose message
names the new address, and the measurements stay buffered. The buffer holds at most
``max_buffer`` measurements; beyond that the oldest are dropped and counted
(``dropped_measurements``). The token is sent only as the basic-auth password, never in
the URL, and never appears in logs, errors or the repr. That delivery is
:mod:`zibrato.backends.toolkit.push`, which the otlp and remote-write backends share.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Unpack
from urllib.parse import urlsplit

import requests

from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import BackendOptions, Option
from zibrato.backends.toolkit.push import (
    DEFAULT_TIMEOUT,
    Pusher,
    PushingBackend,
    StatusPolicy,
    Verdict,
    retry_server_errors,
)

DEFAULT_URL = "https://metrics-api.librato.com"
TOKEN_ENV = "ZIBRATO_LIBRATO_TOKEN"
MAX_PER_POST = 300
MAX_NAME_LENGTH = 255
DEFAULT_MAX_BUFFER = 10_000
# 400 refuses the whole POST for one bad point: split it to find that point. A refused
# token or another status keeps the measurements for the next flush.
POLICY = StatusPolicy(
    retry=retry_server_errors,
    bad_request=Verdict.SPLIT,
    refused=Verdict.HOLD,
    other=Verdict.HOLD,
)

_BAD_CHARS = re.compile(r"[^A-Za-z0-9.:_-]")
_SUMMARY_FIELDS = ("count", "sum", "min", "max", "sum_squares")
_HEADERS = {"Content-Type": "application/json", "User-Agent": "zibrato-librato"}

Measurement = dict[str, Any]


def clean(text: str) -> str:
    """Return ``text`` with the characters Librato refuses in names replaced by ``_``."""
    return _BAD_CHARS.sub("_", text)


def librato_name(name: str, tags: Mapping[str, str]) -> str:
    """Return the Librato metric name of a series: tags folded in as ``.KEY_VALUE``.

    >>> librato_name("http.requests", {"status": "200", "method": "GET"})
    'http.requests.method_GET.status_200'
    """
    full = clean(".".join([name, *(f"{k}_{v}" for k, v in sorted(tags.items()))]))
    if len(full) <= MAX_NAME_LENGTH:
        return full
    digest = hashlib.blake2b(full.encode(), digest_size=5).hexdigest()
    return f"{full[: MAX_NAME_LENGTH - len(digest) - 1]}.{digest}"


def measurement(series: Series, measure_time: int, source: str | None) -> Measurement | None:
    """Return the gauge measurement of one series, or None if a statistic is not finite."""
    stats = series.stats
    point: Measurement = {"name": librato_name(series.name, series.tags)}
    if series.type == SeriesType.COUNTER:
        point["value"] = stats["sum"]
    # a set's value: its number of distinct members
    elif series.type in (SeriesType.GAUGE, SeriesType.SET):
        point["value"] = stats["value"]
    else:
        point.update((field, stats[field]) for field in _SUMMARY_FIELDS)
        point["count"] = int(stats["count"])
    if not all(math.isfinite(value) for key, value in point.items() if key != "name"):
        return None
    source = series.source or source
    if source:
        point["source"] = clean(source)[:MAX_NAME_LENGTH]
    point["measure_time"] = measure_time
    return point


class LibratoBackend(PushingBackend):
    """Post every rollup to Librato's legacy v1 API, buffering across outages.

    >>> backend = LibratoBackend(connect="tcp://127.0.0.1:5551", email="ops@example.com",
    ...                          token="...", source="web-1", flush_interval=60)
    >>> backend.start(); ...; backend.stop()                   # doctest: +SKIP

    The token defaults to ``$ZIBRATO_LIBRATO_TOKEN``. Pass ``session`` to use your own
    ``requests.Session`` (it is then yours to close). ``backoff_base`` and ``backoff_cap``
    (seconds) shape the retry backoff.
    """

    kind = "librato"
    options: ClassVar[tuple[Option, ...]] = (
        Option("url", "API root (default: %(default)s)", default=DEFAULT_URL),
        Option("email", "account email, the basic-auth user (required)"),
        Option(
            "token",
            f"API token (default: ${TOKEN_ENV}, which is safer: command lines "
            "are visible to other users)",
        ),
        Option("source", "source of the series that have none (default: none)"),
        Option("timeout", "seconds per request (default: %(default)s)", float, DEFAULT_TIMEOUT),
        Option(
            "max-buffer",
            "measurements kept while Librato is unreachable; the oldest "
            "are dropped beyond (default: %(default)s)",
            int,
            DEFAULT_MAX_BUFFER,
        ),
    )

    def __init__(
        self,
        *,
        url: str = DEFAULT_URL,
        email: str | None = None,
        token: str | None = None,
        source: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        session: requests.Session | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], bool] | None = None,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        if not email or not token:
            raise ValueError(
                "needs an account email and an API token: give the email option (--email; "
                f"--librato-email with zibrato run) and set ${TOKEN_ENV}"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the librato url must be http:// or https:// with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the librato url must not hold credentials: use email and token")
        if timeout <= 0 or max_buffer < 1:
            raise ValueError("timeout must be positive and max_buffer at least 1")
        self.url = url.rstrip("/")
        self.email = email
        self.source = source
        self.timeout = timeout
        self.max_buffer = max_buffer
        self._push: Pusher[Measurement] = Pusher(
            url=f"{self.url}/v1/metrics",
            encode=_encode,
            on_error=self.count_target_error,
            policy=POLICY,
            kind=self.kind,
            what="measurements",
            headers=_HEADERS,
            auth=(email, token),
            secrets=(token, base64.b64encode(f"{email}:{token}".encode()).decode()),
            timeout=timeout,
            max_buffer=max_buffer,
            max_per_request=MAX_PER_POST,
            session=session,
            name_item=lambda point: str(point["name"]),
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            rng=rng,
            clock=clock,
            pause=pause if pause is not None else self.stop_event.wait,
        )

    def __repr__(self) -> str:
        return f"<LibratoBackend url={self.url!r} email={self.email!r}>"

    @property
    def sent_measurements(self) -> int:
        return self._push.sent

    @property
    def dropped_measurements(self) -> int:
        return self._push.dropped

    @property
    def rejected_measurements(self) -> int:
        return self._push.rejected

    def describe(self) -> str:
        return f"posting to {self.url}/v1/metrics as {self.email}"

    def target_counters(self) -> Mapping[str, float]:
        return {
            "dropped_measurements": self.dropped_measurements,
            "rejected_measurements": self.rejected_measurements,
        }

    def emit(self, rollup: Rollup) -> None:
        deadline = self.push_deadline()
        measure_time = int(rollup.timestamp)
        points = []
        for series in rollup.series:
            point = measurement(series, measure_time, self.source)
            if point is None:
                self._push.count_rejected(1)
            else:
                points.append(point)
        self._push.push(points, deadline)


def _encode(points: Sequence[Measurement]) -> bytes:
    return json.dumps({"gauges": list(points)}, allow_nan=False, separators=(",", ":")).encode()
