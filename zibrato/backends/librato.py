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
the URL, and never appears in logs, errors or the repr.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, ClassVar, Unpack
from urllib.parse import urlsplit

import requests

from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import Backend, BackendOptions, Option

log = logging.getLogger("zibrato")

DEFAULT_URL = "https://metrics-api.librato.com"
TOKEN_ENV = "ZIBRATO_LIBRATO_TOKEN"
MAX_PER_POST = 300
MAX_NAME_LENGTH = 255
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BUFFER = 10_000

_BAD_CHARS = re.compile(r"[^A-Za-z0-9.:_-]")
_SUMMARY_FIELDS = ("count", "sum", "min", "max", "sum_squares")
_HEADERS = {"Content-Type": "application/json", "User-Agent": "zibrato-librato"}

Measurement = dict[str, Any]


class LibratoError(Exception):
    """A failure talking to Librato (messages never contain the token)."""


class LibratoTimeout(LibratoError):
    """Librato did not answer within the request timeout."""


class LibratoUnavailable(LibratoError):
    """Librato could not be reached, or answered 429 or 5xx."""


class LibratoAuthError(LibratoError):
    """Librato refused the credentials (401 or 403)."""


class LibratoRejected(LibratoError):
    """Librato rejected a measurement (400); it is dropped."""


class LibratoRedirected(LibratoError):
    """Librato answered with a redirect (30x), which is not followed."""


class LibratoRequestError(LibratoError):
    """Any other failed request (an unexpected status, a malformed URL)."""


class _Outcome(Enum):
    SENT = "sent"
    BAD_REQUEST = "bad request"
    GIVE_UP = "give up"  # for this flush: keep the batch buffered


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


class LibratoBackend(Backend):
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
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._auth = (email, token)
        self._secrets = (token, base64.b64encode(f"{email}:{token}".encode()).decode())
        self._session = session if session is not None else requests.Session()
        self._owns_session = session is None
        self._rng = rng or random.Random()
        # Injected for tests: the clock of deadlines and backoff, and the pause between
        # retries (returns True when the backend is stopping).
        self._clock = clock
        self._pause = pause if pause is not None else self.stop_event.wait
        self._buffer: deque[Measurement] = deque()
        self._not_before = 0.0  # monotonic time before which Retry-After forbids sending
        self.sent_measurements = 0
        self.dropped_measurements = 0
        self.rejected_measurements = 0
        self.last_error: LibratoError | None = None

    def __repr__(self) -> str:
        return f"<LibratoBackend url={self.url!r} email={self.email!r}>"

    @property
    def buffered(self) -> int:
        """How many measurements wait to be delivered."""
        return len(self._buffer)

    def describe(self) -> str:
        return f"posting to {self.url}/v1/metrics as {self.email}"

    def target_counters(self) -> Mapping[str, float]:
        return {
            "dropped_measurements": self.dropped_measurements,
            "rejected_measurements": self.rejected_measurements,
        }

    def close_target(self) -> None:
        if self._owns_session:
            self._session.close()

    # -- one flush -----------------------------------------------------------------------
    def emit(self, rollup: Rollup) -> None:
        # Never retry into the next flush; the last flush (at stop) gets about a second.
        budget = self.flush_interval * 0.9
        if self.stop_event.is_set():
            budget = min(budget, 1.0)
        deadline = self._clock() + budget
        self._enqueue(rollup)
        if self._clock() < self._not_before:
            return
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(MAX_PER_POST, len(self._buffer)))]
            unsent = self._deliver(batch, deadline)
            if unsent is not None:
                self._buffer.extendleft(reversed(unsent))
                return

    def _enqueue(self, rollup: Rollup) -> None:
        measure_time = int(rollup.timestamp)
        for series in rollup.series:
            point = measurement(series, measure_time, self.source)
            if point is None:
                self.rejected_measurements += 1
                continue
            if len(self._buffer) >= self.max_buffer:
                self._buffer.popleft()
                if not self.dropped_measurements:
                    log.warning(
                        "zibrato librato backend: buffer full (%d measurements); "
                        "dropping the oldest, counted in dropped_measurements",
                        self.max_buffer,
                    )
                self.dropped_measurements += 1
            self._buffer.append(point)

    def _deliver(self, batch: list[Measurement], deadline: float) -> list[Measurement] | None:
        """Send ``batch``; return None when done, or what is left when sending must stop."""
        outcome = self._post(batch, deadline)
        if outcome is _Outcome.SENT:
            self.sent_measurements += len(batch)
            return None
        if outcome is _Outcome.GIVE_UP:
            return batch
        if len(batch) == 1:
            self.rejected_measurements += 1
            self._failed(
                LibratoRejected(
                    f"{self.url} rejected the measurement {batch[0]['name']!r} (HTTP 400); "
                    "it is dropped"
                )
            )
            return None
        half = len(batch) // 2  # isolate the bad points: the rest still goes through
        unsent = self._deliver(batch[:half], deadline)
        if unsent is not None:
            return unsent + batch[half:]
        return self._deliver(batch[half:], deadline)

    def _post(self, batch: list[Measurement], deadline: float) -> _Outcome:
        """POST one batch, retrying what is worth retrying while time is left."""
        body = json.dumps({"gauges": batch}, allow_nan=False, separators=(",", ":")).encode()
        attempt = 0
        while True:
            timeout = min(self.timeout, deadline - self._clock())
            if timeout <= 0:
                return _Outcome.GIVE_UP
            result = self._attempt(body, timeout)
            if isinstance(result, _Outcome):
                return result
            delay = max(result, self._backoff(attempt))
            attempt += 1
            if self._clock() + delay >= deadline:
                self._not_before = self._clock() + result  # honour Retry-After later
                return _Outcome.GIVE_UP
            if self._pause(delay):
                return _Outcome.GIVE_UP

    def _attempt(self, body: bytes, timeout: float) -> _Outcome | float:
        """Make one request: an outcome, or the Retry-After delay (0 if none) to retry."""
        endpoint = f"{self.url}/v1/metrics"
        try:
            # A redirect is never followed: requests would turn the POST into a GET without
            # the measurements (and count them as sent).
            with self._session.post(
                endpoint,
                data=body,
                auth=self._auth,
                headers=_HEADERS,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                status, retry_after = response.status_code, response.headers.get("Retry-After")
                location = response.headers.get("Location", "")
        except requests.Timeout:
            self._failed(LibratoTimeout(f"{endpoint} did not answer within {timeout:.3g} s"))
            return 0.0
        except requests.ConnectionError as exc:
            self._failed(LibratoUnavailable(f"cannot reach {endpoint}: {self._scrub(exc)}"))
            return 0.0
        except requests.RequestException as exc:
            self._failed(LibratoRequestError(f"request to {endpoint} failed: {self._scrub(exc)}"))
            return _Outcome.GIVE_UP
        if 200 <= status < 300:
            return _Outcome.SENT
        if 300 <= status < 400:
            self._failed(
                LibratoRedirected(
                    f"{endpoint} answered HTTP {status}, a redirect to "
                    f"{self._scrub(location)[:200]!r}; redirects are not followed (the POST "
                    "would become a GET without the measurements): set the url option to "
                    "the address that accepts the POST. Measurements stay buffered"
                )
            )
            return _Outcome.GIVE_UP
        if status == 400:
            return _Outcome.BAD_REQUEST
        if status in (401, 403):
            self._failed(
                LibratoAuthError(
                    f"{endpoint} refused the credentials of {self.email} (HTTP {status}); "
                    "measurements stay buffered"
                )
            )
            return _Outcome.GIVE_UP
        if status == 429 or status >= 500:
            self._failed(LibratoUnavailable(f"{endpoint} answered HTTP {status}"))
            return _retry_after_seconds(retry_after)
        self._failed(LibratoRequestError(f"{endpoint} answered HTTP {status}"))
        return _Outcome.GIVE_UP

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2**attempt."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _failed(self, error: LibratoError) -> None:
        self.last_error = error
        self.count_target_error(error)

    def _scrub(self, exc: BaseException | str) -> str:
        """Return the message of ``exc`` with any secret masked (it may quote the request)."""
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:500]


def _retry_after_seconds(value: str | None) -> float:
    try:
        seconds = float(value) if value else 0.0
    except ValueError:  # an HTTP date: rare for this API; fall back to the backoff
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0
