"""``graphite``: send each rollup to carbon in the plaintext protocol over TCP."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, Unpack

from zibrato.aggregation import Rollup, Series, SeriesType
from zibrato.backends.base import Backend, BackendOptions, Option
from zibrato.backends.toolkit.merge import merge_rollups
from zibrato.backends.toolkit.naming import (
    clean_name,
    clean_tag_key,
    clean_tag_value,
    dotted_name,
    format_number,
    parse_address,
    series_tags,
    split_health,
)

log = logging.getLogger("zibrato")

DEFAULT_ADDRESS = "127.0.0.1:2003"
DEFAULT_TIMEOUT = 2.0
DEFAULT_BUFFER_LINES = 10_000
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 2.0
STOP_MARGIN = 0.2  # seconds of the stop budget left for closing the socket
# carbon-cache writes what it received about once a second and loses it when stopped: what
# was delivered within this long before the last delivery is sent again on a new connection.
RESEND_SECONDS = 2.0
_RESERVED_TAGS = {"name": "name_"}  # Graphite stores the metric name as the tag "name"


class GraphiteBackend(Backend):
    """Send every rollup to carbon as ``path value timestamp`` lines over TCP.

    >>> GraphiteBackend(connect="tcp://127.0.0.1:5551", address="carbon:2003",
    ...                 prefix="shop", tags=True).start()            # doctest: +SKIP

    Paths, all with the rollup's timestamp (whole seconds):

    * counter: ``NAME.count`` (the sum of the interval) and ``NAME.rate`` (per second);
    * gauge: ``NAME`` (the value);
    * set: ``NAME`` (the number of distinct members in the interval);
    * timer and distribution: ``NAME.count``, ``.sum``, ``.min``, ``.max``, ``.mean``,
      ``.median``, ``.stddev`` and one path per percentile (``.p90``, ``.p95``,
      ``.p99``; 99.9 gives ``.p99_9``). Timer statistics stay in **seconds**, as everywhere
      else in Zibrato (statsd's own Graphite output would be milliseconds).

    NAME is ``[PREFIX.]name[.KEY.VALUE]...``: the statsd backend's name rule (tags sorted
    by key, the source as tag ``source``; characters outside ``A-Z a-z 0-9 _ . -`` become
    ``_`` in the name, and outside ``A-Z a-z 0-9 _ -`` in tag keys and values), so a series
    has the same path whether it reaches Graphite through statsd or directly. With
    ``tags=True`` (Graphite 1.1) the tags follow instead: ``NAME.p90;key=value;...``; keys
    keep ``A-Z a-z 0-9 _ . - /``, values also ``:``, anything else becomes ``_``, and a
    tag called ``name`` is sent as ``name_``.

    A flush never blocks longer than ``timeout`` (connecting and sending together; name
    resolution excepted) and never raises. When carbon is unreachable, reconnecting waits
    0.5 s, doubling to 2 s (reset by a successful send), so carbon's return is noticed at
    the first flush 2 s after it; a stop tries again at once, within what is left of the
    stop's time. The lines that could not be sent (the newest ``buffer_lines``) go first
    once carbon is back; older ones are counted in ``dropped_lines``. A failed send is
    retried whole: carbon keeps the last value per path and timestamp, so a line sent
    twice does no harm.

    The backend's own ``zibrato.backend.*`` series never wait in that buffer (they
    would be the first evicted, and with them the count of what was evicted): until
    carbon takes them they are summed up (counters add, gauges keep the last value)
    and sent, before the buffer, with the first flush that reaches carbon.

    Whisper keeps one value per timestamp, the last written. So a rollup that would be
    stamped in the same second as the previous one, or that is the stop's partial
    interval, is merged into the previous rollup
    (:func:`zibrato.backends.toolkit.merge.merge_rollups`)
    and the result is sent again under the previous timestamp: the point already stored
    is overwritten by a superset of itself, never by the shorter interval, and a
    restarted backend's first point (a whole flush interval after the stop) cannot land
    on it either. The previous rollup, raw values included, is kept until the next flush.
    """

    kind = "graphite"
    options: ClassVar[tuple[Option, ...]] = (
        Option("address", "carbon host:port (default: %(default)s)", default=DEFAULT_ADDRESS),
        Option("prefix", "prefix every path with PREFIX."),
        Option(
            "tags",
            "send Graphite 1.1 tags (path;key=value) instead of folding tags into the path",
            flag=True,
            default=False,
        ),
        Option(
            "timeout",
            "seconds one flush may spend connecting and sending (default: %(default)s)",
            type=float,
            default=DEFAULT_TIMEOUT,
        ),
        Option(
            "buffer-lines",
            "lines kept for carbon while it is unreachable (default: %(default)s)",
            type=int,
            default=DEFAULT_BUFFER_LINES,
        ),
    )

    def __init__(
        self,
        *,
        address: str = DEFAULT_ADDRESS,
        prefix: str | None = None,
        tags: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        buffer_lines: int = DEFAULT_BUFFER_LINES,
        resend_seconds: float = RESEND_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        **common: Unpack[BackendOptions],
    ) -> None:
        super().__init__(**common)
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if buffer_lines < 0:
            raise ValueError("buffer_lines must not be negative")
        self.address = address
        self.host, self.port = parse_address(address, default_port=2003)
        self.prefix = prefix
        self.tags = tags
        self.timeout = timeout
        self.buffer_lines = buffer_lines
        self.dropped_lines = 0
        self.resend_seconds = resend_seconds
        self.resent_lines = 0
        # What carbon took lately: (clock time, lines), sent again on a new connection.
        self._recent: deque[tuple[float, list[bytes]]] = deque()
        self._fresh = False  # the socket is new: nothing sent on it yet
        self._clock = clock  # drives the reconnect backoff and the resend window
        self._socket: socket.socket | None = None
        self._pending: deque[bytes] = deque()
        self._backoff = 0.0
        self._retry_at = 0.0
        self._send_lock = threading.Lock()
        self._stop_deadline: float | None = None
        # The last rollup sent (its data series), to merge a same-second or final one into.
        self._previous: Rollup | None = None
        self._previous_unsent = 0  # its lines at the end of the buffer, if its send failed
        # Own health: what carbon holds at its timestamp, and what it has yet to take.
        self._delivered_health: Rollup | None = None
        self._unsent_health: Rollup | None = None

    @property
    def pending_lines(self) -> int:
        """How many lines wait for carbon to come back."""
        return len(self._pending)

    def stop(self, timeout: float = 1.5) -> None:
        """Stop as :meth:`Backend.stop` does; the final flush keeps within ``timeout``."""
        self._stop_deadline = time.monotonic() + timeout - STOP_MARGIN
        super().stop(timeout)

    def emit(self, rollup: Rollup) -> None:
        stopping = self.stop_event.is_set()
        deadline = time.monotonic() + self.timeout
        if stopping and self._stop_deadline is not None:
            deadline = min(deadline, self._stop_deadline)
        percentiles = self.aggregator.percentiles
        stamp = float(int(rollup.timestamp))
        own, others = split_health(rollup.series, self.kind)
        data, health = Rollup(stamp, rollup.interval, others), Rollup(stamp, rollup.interval, own)
        with self._send_lock:
            # Health is only ever sent again as a superset of what carbon holds at its stamp.
            earlier_health = self._unsent_health
            previous = self._previous
            if previous is not None and (stopping or stamp == previous.timestamp):
                data = merge_rollups(previous, data, percentiles)
                # The previous lines still waiting are superseded by the merged ones.
                for _ in range(min(self._previous_unsent, len(self._pending))):
                    self._pending.pop()
                earlier_health = earlier_health or self._delivered_health
            if earlier_health is not None:
                health = merge_rollups(earlier_health, health, percentiles)
            self._previous = data
            lines = self.lines(data)
            self._pending.extend(lines)
            head = self.lines(health)
            if not (head or self._pending):
                return
            if self._connected(deadline, retry_now=stopping) and self._send(head, deadline):
                self._pending.clear()
                self._previous_unsent = 0
                self._delivered_health, self._unsent_health = health, None
            else:
                self._previous_unsent = len(lines)
                self._delivered_health, self._unsent_health = None, health
                self._trim()

    def target_counters(self) -> Mapping[str, float]:
        return {"dropped_lines": self.dropped_lines, "resent_lines": self.resent_lines}

    def describe(self) -> str:
        return f"sending to carbon at {self.host}:{self.port} (plaintext over TCP)"

    def close_target(self) -> None:
        if not self._send_lock.acquire(timeout=0.1):
            # An emit is stuck in send: wake it; its failure path closes the socket.
            sock = self._socket
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return
        try:
            self._close_socket()
            if self._pending:
                self.dropped_lines += len(self._pending)
                log.warning(
                    "zibrato graphite backend: %d lines not sent at stop", len(self._pending)
                )
                self._pending.clear()
        finally:
            self._send_lock.release()

    # -- connection --------------------------------------------------------------------
    def _connected(self, deadline: float, *, retry_now: bool = False) -> bool:
        if self._socket is not None:
            if not _peer_closed(self._socket):
                return True
            self._close_socket()  # carbon closed it (restart?): reconnect right away
        if self._clock() < self._retry_at and not retry_now:
            return False
        try:
            self._socket = socket.create_connection(
                (self.host, self.port), timeout=max(deadline - time.monotonic(), 0.001)
            )
        except OSError as exc:
            self._failed(exc)
            return False
        self._fresh = True
        return True

    def _send(self, head: list[bytes], deadline: float) -> bool:
        sock = self._socket
        assert sock is not None
        again = [line for _, lines in self._recent for line in lines] if self._fresh else []
        sent = [*head, *self._pending]
        try:
            # sendall's timeout bounds the whole call, not each chunk (Python >= 3.5).
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(b"".join((*again, *sent)))
        except OSError as exc:  # includes TimeoutError
            self._failed(exc)
            return False
        self._backoff = self._retry_at = 0.0
        self._fresh = False
        self.resent_lines += len(again)
        self._remember(sent)
        return True

    def _remember(self, lines: list[bytes]) -> None:
        """Keep what was just delivered, and what came within ``resend_seconds`` before."""
        now = self._clock()
        self._recent.append((now, lines))
        kept = sum(len(lines) for _, lines in self._recent)
        while len(self._recent) > 1 and (
            self._recent[0][0] < now - self.resend_seconds or kept > self.buffer_lines
        ):
            kept -= len(self._recent.popleft()[1])

    def _failed(self, exc: OSError) -> None:
        self._close_socket()
        self.count_target_error(exc)
        self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
        self._retry_at = self._clock() + self._backoff

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _trim(self) -> None:
        extra = len(self._pending) - self.buffer_lines
        if extra <= 0:
            return
        if not self.dropped_lines:
            log.warning(
                "zibrato graphite backend: carbon unreachable, dropping the oldest "
                "lines beyond %d (counted in dropped_lines)",
                self.buffer_lines,
            )
        self.dropped_lines += extra
        for _ in range(extra):
            self._pending.popleft()

    # -- rendering ---------------------------------------------------------------------
    def lines(self, rollup: Rollup) -> list[bytes]:
        """Return the plaintext lines of one rollup, each ending in a newline."""
        stamp = int(rollup.timestamp)
        return [
            f"{path} {format_number(value)} {stamp}\n".encode()
            for series in rollup.series
            for path, value in self.paths(series)
        ]

    def paths(self, series: Series) -> Iterator[tuple[str, float]]:
        """Yield (path, value) for every statistic of ``series``."""
        if self.tags:
            name, tags = clean_name(series.name, self.prefix), graphite_tags(series)
        else:
            name, tags = dotted_name(series, self.prefix), ""
        for stat, value in series_stats(series):
            yield (f"{name}.{stat}{tags}" if stat else f"{name}{tags}"), value


def series_stats(series: Series) -> Iterator[tuple[str, float]]:
    """Yield (suffix, value) per statistic: a gauge's one value has the suffix ``""``."""
    stats = series.stats
    if series.type == SeriesType.COUNTER:
        yield "count", stats["sum"]
        yield "rate", stats["rate"]
    # a set's value: its number of distinct members
    elif series.type in (SeriesType.GAUGE, SeriesType.SET):
        yield "", stats["value"]
    else:
        for stat, value in stats.items():
            if stat != "sum_squares":
                yield stat, value


def graphite_tags(series: Series) -> str:
    """Return ``;key=value...`` (Graphite 1.1) for the tags and source of ``series``."""
    parts = []
    for key, value in series_tags(series).items():
        cleaned = clean_tag_key(key)
        parts.append(f";{_RESERVED_TAGS.get(cleaned, cleaned)}={clean_tag_value(value)}")
    return "".join(parts)


def _peer_closed(sock: socket.socket) -> bool:
    """Return whether carbon closed the connection (it never sends, so readable = closed)."""
    try:
        sock.setblocking(False)
        return sock.recv(4096) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
