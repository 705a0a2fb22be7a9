"""Push to an HTTP target: a bounded buffer, retries with backoff, every loss counted.

What the ``librato``, ``otlp`` and ``remote-write`` backends share. A backend turns each
rollup into *items* (Librato measurements, OTLP data points, remote-write samples) and
hands them to a :class:`Pusher`, which keeps them in order in a buffer of at most
``max_buffer`` items (beyond that the oldest are dropped and counted) and POSTs them in
requests of at most ``max_per_request`` items, each body made by the backend's ``encode``.

One flush delivers while its time lasts (:meth:`Pusher.deadline`): a retryable answer
(the backend's :class:`StatusPolicy` says which), a timeout or a refused connection is
tried again after a jittered exponential backoff, waiting at least ``Retry-After``
seconds, but never past the deadline; what is not delivered by then stays buffered for
the next flush, and a ``Retry-After`` longer than that holds sending until it has passed.
A redirect (30x) is never followed (requests would turn the POST into a GET without the
body): it is a counted failure naming the new address, and the items stay buffered.
Other answers are the policy's: drop the request's items as rejected (counted), keep them
for the next flush, or split the request in halves to isolate the items the target
refuses (the legacy Librato API answers 400 for a whole request).

Every failure is passed to ``on_error`` (the backend counts it in
``zibrato.backend.target_errors`` and logs the first of each kind). Secrets (tokens,
passwords, header values) never appear in the errors: any text that may quote the request
is scrubbed first.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import requests

from zibrato.backends.base import Backend

log = logging.getLogger("zibrato")

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0
MIN_SECRET_LENGTH = 4  # shorter header values are not masked: "1" would mask every digit
STOP_BUDGET = 1.0  # seconds the final flush (at stop) may spend delivering
FLUSH_SHARE = 0.9  # of the flush interval, the most one flush spends delivering


class TargetError(Exception):
    """A failure to deliver to an HTTP target (its message never holds a secret)."""


class TargetTimeout(TargetError):
    """The target did not answer within the request timeout."""


class TargetUnavailable(TargetError):
    """The target could not be reached, or answered a status worth retrying."""


class TargetRefused(TargetError):
    """The target refused the credentials (401 or 403)."""


class TargetRejected(TargetError):
    """The target rejected what was sent; those items are dropped and counted."""


class TargetRedirected(TargetError):
    """The target answered with a redirect (30x), which is not followed."""


class TargetRequestError(TargetError):
    """Any other failed request (an unexpected status, a malformed URL)."""


class Verdict(Enum):
    """What to do with a request's items after an answer."""

    SENT = "sent"
    RETRY = "retry"  # back off (at least Retry-After) and try again while the flush lasts
    HOLD = "hold"  # keep them buffered and try at the next flush
    REJECT = "reject"  # the target will never take them: drop them, counted as rejected
    SPLIT = "split"  # the target refused some of them: halve the request to find which


@dataclass(frozen=True)
class StatusPolicy:
    """How a target's HTTP statuses are handled (2xx is sent, 30x held, whatever the policy).

    ``retry`` says which statuses are retried; ``bad_request`` (400), ``refused`` (401,
    403) and ``other`` (any other status) say what becomes of the items otherwise.
    """

    retry: Callable[[int], bool]
    bad_request: Verdict = Verdict.REJECT
    refused: Verdict = Verdict.REJECT
    other: Verdict = Verdict.REJECT

    def verdict(self, status: int) -> Verdict:
        """Return what an answer with ``status`` means for the items it answered."""
        if 200 <= status < 300:
            return Verdict.SENT
        if 300 <= status < 400:
            return Verdict.HOLD
        if self.retry(status):
            return Verdict.RETRY
        if status == 400:
            return self.bad_request
        if status in (401, 403):
            return self.refused
        return self.other


def retry_server_errors(status: int) -> bool:
    """429 and every 5xx: the rule of Librato's API and of Prometheus remote write."""
    return status == 429 or status >= 500


@dataclass(frozen=True)
class Reply:
    """What one request got back."""

    status: int
    retry_after: float  # seconds; 0 when the target gave none
    location: str
    body: bytes


class Pusher(Generic[T]):
    """Buffer items and POST them to ``url``, retrying and counting as described above.

    >>> pusher = Pusher(url="http://127.0.0.1:9201/write", encode=encode, kind="mine",
    ...                 what="samples",
    ...                 policy=StatusPolicy(retry=retry_server_errors),
    ...                 on_error=backend.count_target_error)            # doctest: +SKIP
    >>> pusher.push(items, pusher.deadline(10.0, stopping=False))       # doctest: +SKIP

    ``kind`` names the backend in logs; ``what`` is the plural of an item (``samples``).
    ``headers`` go with every request; ``auth`` is requests' basic-auth pair; ``secrets``
    lists every string that must never show (header values and the password are added).
    ``accepted(body, sent)`` may read a 2xx answer and return how many of the ``sent``
    items the target dropped all the same (OTLP's partial success): they count as
    rejected. ``name_item`` names an item in the message of a rejected one. With
    ``one_push_per_request``, a request holds the items of one :meth:`push` only (one
    flush): a target that refuses a whole request for an old sample it already stored
    (Prometheus, after a request it stored but answered too late) then loses no newer one.
    ``clock`` and ``pause`` (which returns True when the backend is stopping) are injected
    by tests.
    """

    def __init__(
        self,
        *,
        url: str,
        encode: Callable[[Sequence[T]], bytes],
        on_error: Callable[[TargetError], None],
        policy: StatusPolicy,
        kind: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        secrets: Iterable[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        max_buffer: int = 10_000,
        max_per_request: int = 500,
        one_push_per_request: bool = False,
        session: requests.Session | None = None,
        accepted: Callable[[bytes, int], int] | None = None,
        name_item: Callable[[T], str] | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], bool] | None = None,
    ) -> None:
        if timeout <= 0 or max_buffer < 1 or max_per_request < 1:
            raise ValueError("timeout must be positive, max_buffer and max_per_request at least 1")
        self.url = url
        self.kind = kind
        self.what = what
        self.policy = policy
        self.timeout = timeout
        self.max_buffer = max_buffer
        self.max_per_request = max_per_request
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._encode = encode
        self._on_error = on_error
        self._headers = dict(headers or {})
        self._auth = auth
        self._secrets = tuple(
            secret
            for secret in {*secrets, *self._headers.values(), *(auth[1:] if auth else ())}
            if len(secret) >= MIN_SECRET_LENGTH
        )
        self._session = session if session is not None else requests.Session()
        self._owns_session = session is None
        self._accepted = accepted
        self._name_item = name_item
        self._rng = rng or random.Random()
        self._clock = clock
        self._pause = pause if pause is not None else _never_stopping
        self.one_push_per_request = one_push_per_request
        self._buffer: deque[T] = deque()
        self._pushes: deque[int] = deque()  # the push each buffered item came with
        self._push_number = 0
        self._not_before = 0.0  # clock time before which Retry-After forbids sending
        self.sent = 0
        self.dropped = 0
        self.rejected = 0
        self.last_error: TargetError | None = None

    @property
    def buffered(self) -> int:
        """How many items wait to be delivered."""
        return len(self._buffer)

    def deadline(self, flush_interval: float, *, stopping: bool) -> float:
        """Return when one flush must stop delivering: never into the next flush; the last
        one, when the backend is stopping, within about a second."""
        budget = STOP_BUDGET if stopping else flush_interval * FLUSH_SHARE
        return self._clock() + budget

    def push(self, items: Iterable[T], deadline: float) -> None:
        """Buffer ``items`` after those still waiting, then deliver until ``deadline``."""
        self.enqueue(items)
        if self._clock() < self._not_before:
            return
        while self._buffer:
            count = min(self.max_per_request, len(self._buffer))
            if self.one_push_per_request:
                first = self._pushes[0]
                count = next((i for i in range(count) if self._pushes[i] != first), count)
            batch = [self._buffer.popleft() for _ in range(count)]
            pushes = [self._pushes.popleft() for _ in range(count)]
            unsent = self._deliver(batch, deadline)
            if unsent is not None:
                self._buffer.extendleft(reversed(unsent))
                self._pushes.extendleft(reversed(pushes[len(pushes) - len(unsent) :]))
                return

    def enqueue(self, items: Iterable[T]) -> None:
        """Buffer ``items``; past ``max_buffer`` the oldest are dropped and counted."""
        self._push_number += 1
        for item in items:
            if len(self._buffer) >= self.max_buffer:
                self._buffer.popleft()
                self._pushes.popleft()
                if not self.dropped:
                    log.warning(
                        "zibrato %s backend: buffer full (%d %s); dropping the oldest, "
                        "counted in dropped_%s",
                        self.kind,
                        self.max_buffer,
                        self.what,
                        self.what,
                    )
                self.dropped += 1
            self._buffer.append(item)
            self._pushes.append(self._push_number)

    def count_rejected(self, count: int) -> None:
        """Count items the backend itself could not send (say, a value that is not finite)."""
        self.rejected += count

    def close(self) -> None:
        """Count what was never delivered as dropped (and say so); close the session if it
        is ours."""
        if self._buffer:
            self.dropped += len(self._buffer)
            log.warning(
                "zibrato %s backend: %d %s not delivered at stop",
                self.kind,
                len(self._buffer),
                self.what,
            )
            self._buffer.clear()
            self._pushes.clear()
        if self._owns_session:
            self._session.close()

    @property
    def url_for_logs(self) -> str:
        return self.scrub(self.url)

    def scrub(self, text: object) -> str:
        """Return ``text`` with every secret masked, cut to 500 characters."""
        shown = str(text)
        for secret in self._secrets:
            shown = shown.replace(secret, "***")
        return shown[:500]

    # -- one request ---------------------------------------------------------------------
    def _deliver(self, batch: list[T], deadline: float) -> list[T] | None:
        """Send ``batch``; return None when done with it, or what is left when sending must
        stop for this flush."""
        verdict, reply = self._post(batch, deadline)
        if verdict is Verdict.SENT:
            dropped = self._accepted(reply.body, len(batch)) if self._accepted and reply else 0
            self.sent += len(batch) - dropped
            if dropped:
                self.rejected += dropped
                self._failed(
                    TargetRejected(
                        f"{self.url_for_logs} accepted the request but dropped "
                        f"{dropped} of its {len(batch)} {self.what}"
                    )
                )
            return None
        if verdict is Verdict.HOLD:
            return batch
        if verdict is Verdict.REJECT or len(batch) == 1:
            self.rejected += len(batch)
            self._failed(self._rejection(batch, reply))
            return None
        half = len(batch) // 2  # SPLIT: isolate the bad items, the rest still goes through
        unsent = self._deliver(batch[:half], deadline)
        if unsent is not None:
            return unsent + batch[half:]
        return self._deliver(batch[half:], deadline)

    def _rejection(self, batch: list[T], reply: Reply | None) -> TargetError:
        status = f"HTTP {reply.status}" if reply else "no answer"
        said = self.scrub(reply.body.decode("utf-8", "replace").strip())[:200] if reply else ""
        which = (
            f"the {self.what[:-1]} {self._name_item(batch[0])!r}"
            if len(batch) == 1 and self._name_item
            else f"{len(batch)} {self.what}"
        )
        if reply is not None and reply.status in (401, 403):
            return TargetRefused(
                f"{self.url_for_logs} refused the credentials ({status}); {which} dropped"
            )
        return TargetRejected(
            f"{self.url_for_logs} rejected {which} ({status}{': ' + said if said else ''}); dropped"
        )

    def _post(self, batch: list[T], deadline: float) -> tuple[Verdict, Reply | None]:
        """POST one batch, retrying what is worth retrying while time is left."""
        body = self._encode(batch)
        attempt = 0
        while True:
            timeout = min(self.timeout, deadline - self._clock())
            if timeout <= 0:
                return Verdict.HOLD, None
            answer = self._attempt(body, timeout)
            if isinstance(answer, Verdict):
                verdict, reply = answer, None
            else:
                verdict, reply = self.policy.verdict(answer.status), answer
                self._explain(answer, verdict)
            if verdict is not Verdict.RETRY:
                return verdict, reply
            retry_after = reply.retry_after if reply else 0.0
            delay = max(retry_after, self._backoff(attempt))
            attempt += 1
            if self._clock() + delay >= deadline:
                self._not_before = self._clock() + retry_after  # honour Retry-After later
                return Verdict.HOLD, None
            if self._pause(delay):
                return Verdict.HOLD, None

    def _attempt(self, body: bytes, timeout: float) -> Reply | Verdict:
        """Make one request: its reply, or what to do after it failed (counted): retry a
        timeout or a connection error, hold the items after any other error."""
        try:
            # A redirect is never followed: requests would turn the POST into a GET
            # without the body (and count it as sent).
            with self._session.post(
                self.url,
                data=body,
                auth=self._auth,
                headers=self._headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                return Reply(
                    response.status_code,
                    retry_after_seconds(response.headers.get("Retry-After")),
                    response.headers.get("Location", ""),
                    response.content[:4096],
                )
        except requests.Timeout:
            self._failed(
                TargetTimeout(f"{self.url_for_logs} did not answer within {timeout:.3g} s")
            )
            return Verdict.RETRY
        except requests.ConnectionError as exc:
            self._failed(TargetUnavailable(f"cannot reach {self.url_for_logs}: {self.scrub(exc)}"))
            return Verdict.RETRY
        except requests.RequestException as exc:
            self._failed(
                TargetRequestError(f"request to {self.url_for_logs} failed: {self.scrub(exc)}")
            )
            return Verdict.HOLD

    def _explain(self, reply: Reply, verdict: Verdict) -> None:
        """Count and describe a failed answer (a rejection is described with its items)."""
        endpoint, status = self.url_for_logs, reply.status
        if verdict in (Verdict.SENT, Verdict.REJECT, Verdict.SPLIT):
            return
        if 300 <= status < 400:
            self._failed(
                TargetRedirected(
                    f"{endpoint} answered HTTP {status}, a redirect to "
                    f"{self.scrub(reply.location)[:200]!r}; redirects are not followed (the "
                    "POST would become a GET without the data): set the url to the address "
                    f"that accepts the POST. The {self.what} stay buffered"
                )
            )
        elif status in (401, 403):
            self._failed(
                TargetRefused(
                    f"{endpoint} refused the credentials (HTTP {status}); the {self.what} "
                    "stay buffered"
                )
            )
        elif verdict is Verdict.RETRY:
            self._failed(TargetUnavailable(f"{endpoint} answered HTTP {status}"))
        else:
            self._failed(TargetRequestError(f"{endpoint} answered HTTP {status}"))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2**attempt."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _failed(self, error: TargetError) -> None:
        self.last_error = error
        self._on_error(error)


def parse_headers(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """Return HTTP headers from ``key=value,key2=value2`` (values percent-decoded, as in
    ``OTEL_EXPORTER_OTLP_HEADERS``) or a mapping; raise ValueError, never quoting a value.

    >>> parse_headers("api-key=s3cr%3Dt, X-Scope-OrgID=shop")
    {'api-key': 's3cr=t', 'X-Scope-OrgID': 'shop'}
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        pairs = [(str(key), str(value)) for key, value in text.items()]
    else:
        pairs = []
        for position, part in enumerate(text.split(","), 1):
            if not part.strip():
                continue
            key, equals, value = part.partition("=")
            if not equals:
                raise ValueError(f"header #{position} is not key=value")
            pairs.append((unquote(key.strip()), unquote(value.strip())))
    headers = {}
    for key, value in pairs:
        if not key or not all(33 <= ord(c) < 127 and c not in '()<>@,;:\\"/[]?={}' for c in key):
            raise ValueError(f"{key[:40]!r} is not an HTTP header name")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of header {key!r} holds a line break")
        headers[key] = value
    return headers


def check_url(url: str, *, what: str) -> str:
    """Return ``url`` if it is http(s) with a host and no credentials; raise ValueError."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the {what} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"the {what} must not hold credentials: use the options for them")
    return url


def retry_after_seconds(value: str | None) -> float:
    """Return a ``Retry-After`` header as seconds from now (a number or an HTTP date)."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        seconds = when.timestamp() - time.time()
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _never_stopping(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class PushingBackend(Backend):
    """A backend that delivers each flush through its :class:`Pusher`, ``self._push``
    (librato, otlp, remote_write): what it buffers, its last error, its close."""

    _push: Pusher[Any]

    @property
    def buffered(self) -> int:
        """How many items (measurements, points, samples) wait to be delivered."""
        return self._push.buffered

    @property
    def last_error(self) -> TargetError | None:
        return self._push.last_error

    def close_target(self) -> None:
        self._push.close()

    def push_deadline(self) -> float:
        """When this flush's delivery must end: within the flush interval, sooner at stop."""
        return self._push.deadline(self.flush_interval, stopping=self.stop_event.is_set())
