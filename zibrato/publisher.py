"""Hand events from the instrumented process to ZeroMQ without blocking it.

The calling thread only appends a tuple to a per-level ``deque`` (atomic under the GIL,
and safe for any number of threads). A daemon thread wakes every ``interval`` seconds
(sooner when a level's backlog passes ``wake_threshold``), drains the deques into
batches, has them checked (:mod:`zibrato.batching`), and sends them through the
:class:`~zibrato.link.BrokerLink`. Whoever drives the link holds the publisher's lock:
that thread, or a caller of :meth:`Publisher.flush` or :meth:`Publisher.close`.

Every event recorded ends in exactly one count: ``sent_events``, ``filtered_events`` (no
subscriber wanted its level), or ``dropped[reason]``; ``dropped`` is also reported as the
counter ``zibrato.publisher.dropped``. :meth:`Publisher.close` is bounded in time
(``linger`` to wait for the broker, plus :data:`CLOSE_GRACE` of CPU for encoding what is
pending, on any machine load): what it could not hand to ZeroMQ by then is counted as
``close_timeout``, and what ZeroMQ may still have held when the linger ran out as
``linger_expired`` (an upper bound: see :mod:`zibrato.link`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from itertools import repeat, starmap
from typing import Any

from zibrato import levels, lifecycle, protocol
from zibrato.accounting import DROPPED_METRIC, Counts
from zibrato.addresses import DEFAULT_FRONTEND
from zibrato.link import BrokerLink
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER, Event
from zibrato.sending import DROPPED_LEVEL, BatchSender, CaptureSink
from zibrato.series import Series, SeriesBook

log = logging.getLogger("zibrato")

__all__ = ["DROPPED_LEVEL", "DROPPED_METRIC", "CaptureSink", "Publisher"]

# How long a client waits for any broker before it says (once) that none answers.
NO_BROKER_WARNING_AFTER = 3.0
# What that warning tells a user to run; an adapter names its own command.
DEFAULT_BROKER_HINT = "zibrato run"
# Beyond close()'s linger (the wait for the broker): time to encode and hand to ZeroMQ
# what is still buffered, however loaded the machine. After it, close() gives up.
CLOSE_GRACE = 1.0
# The least time close() gives ZeroMQ to write what it holds (within the linger and grace),
# even when encoding the backlog took the whole linger.
LAST_WRITE = 0.1
# How long the publisher thread waits on a full ZeroMQ queue before it counts the batch
# as lost (send_queue_full), in batch intervals. The application never waits for it.
SEND_PATIENCE = 4
# Kinds that can be recorded as a series' bare values: those whose aggregation does not
# depend on the order of events across series (gauges do: a set and a delta of one gauge).
SERIES_KINDS = frozenset((COUNTER, TIMER, DISTRIBUTION))
# Series one publisher keeps (each bounded by buffer_size values); past it, recording
# goes through the queues of events.
MAX_SERIES = 2_000


class Wake:
    """What the publisher thread sleeps on until it is woken: ``threading.Event``'s four
    methods on one lock, made when the thread is started.

    Not ``threading.Event``: its ``wait`` allocates a lock at each call, from whatever
    ``threading`` is by then. A gunicorn gevent worker starts our thread at fork, a real
    thread, and patches ``threading`` afterwards: that real thread then waited on gevent
    locks, running a gevent hub of its own, woken across threads by the worker's hub (gdb
    showed it). One lock taken at construction is of the same kind as the thread started
    beside it. Every release tolerates a lock already released by a concurrent ``set``.
    """

    __slots__ = ("_flag", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held while not set
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        self._release()

    def clear(self) -> None:
        self._flag = False
        self._lock.acquire(False)  # held again, if a set() had released it

    def wait(self, timeout: float) -> bool:
        """Return once set (True) or after ``timeout`` s (whether it was set by then)."""
        if self._flag:
            return True
        if self._lock.acquire(True, timeout):
            self._release()  # stays set until clear()
        return self._flag

    def _release(self) -> None:
        # Already released: set twice, or a set() since wait() took it.
        with contextlib.suppress(RuntimeError):
            self._lock.release()


class Publisher:
    """Batch events per level and publish them on a background thread.

    >>> pub = Publisher("tcp://127.0.0.1:5550")      # doctest: +SKIP
    >>> pub.queues["info"].append((0, "hits", 1, None, None))
    >>> pub.flush()
    """

    def __init__(
        self,
        address: str = DEFAULT_FRONTEND,
        *,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        buffer_size: int = 100_000,
        batch_size: int = 2048,
        interval: float = 0.05,
        linger: float = 0.25,
        startup_hold: float = 1.0,
        sndhwm: int = 100,
        curve: str | os.PathLike[str] | None = None,
        broker_hint: str = DEFAULT_BROKER_HINT,
    ) -> None:
        self.address = address
        self.curve = curve  # a CURVE keys directory (zibrato.security.curve); None: no CURVE
        self.broker_hint = broker_hint  # how to start a broker, for the "no broker" warning
        self.source, self.tags = _publisher_defaults(source, tags)
        self.buffer_size = buffer_size
        self.batch_size = min(batch_size, protocol.MAX_EVENTS_PER_BATCH)
        # Past this many pending events on a level, recording wakes the sender early.
        self.wake_threshold = min(buffer_size, 4 * self.batch_size)
        self.interval = interval
        self.linger = linger
        self.startup_hold = startup_hold
        self.sndhwm = sndhwm
        # One deque per level, created once and never replaced, so that clients and
        # timers may keep references to them; a forked child clears them instead.
        self.queues: dict[str, deque[Event]] = {level: deque() for level in levels.LEVELS}
        self._warned_no_broker = False
        # Series recorded as bare values (zibrato.series): made on request, bounded.
        self.series_book = SeriesBook(
            levels.LEVELS,
            soft_cap=self.wake_threshold,
            cap=buffer_size,
            overflow=self.series_overflow,
            kinds=SERIES_KINDS,
            max_series=MAX_SERIES,
        )
        self._closing = False  # close() has begun: the thread stops driving the link
        self._closed = False
        self._renew_process_state()
        lifecycle.track(self)
        self._start_thread()

    # -- process state, renewed in a forked child ---------------------------------
    def _renew_process_state(self) -> None:
        # Locks and events too: another thread of the parent may have held one at fork.
        # Made at the moment the thread is started, from the same threading module: a
        # real thread with real locks, or (gevent patched first) a greenlet with gevent's.
        self._lock = threading.Lock()  # held by whoever drives the link
        self._wake = Wake()
        self._pid = os.getpid()
        self.publisher_id = f"{self._pid:x}-{os.urandom(4).hex()}"
        # The child's counts start at zero: the parent's are the parent's to report.
        self.counts = Counts()
        # A forked child never touches the parent's link: its I/O thread is gone.
        self._link = self._new_link()
        self._sender = BatchSender(
            self._link, self.counts, self.publisher_id, source=self.source, tags=self.tags
        )
        self._thread: threading.Thread | None = None

    def _new_link(self) -> BrokerLink:
        return BrokerLink(
            self.address, sndhwm=self.sndhwm, startup_hold=self.startup_hold, curve=self.curve
        )

    # The counts that stats() shows, as attributes (zibrato.accounting keeps them).
    @property
    def dropped(self) -> dict[str, int]:
        return self.counts.dropped

    @property
    def sent_events(self) -> int:
        return self.counts.sent_events

    @property
    def sent_batches(self) -> int:
        return self.counts.sent_batches

    @property
    def filtered_events(self) -> int:
        return self.counts.filtered_events

    def after_fork_in_child(self) -> None:
        """Renew what belongs to one process (lifecycle calls it in a forked child)."""
        # The child must not send what the parent had buffered (the parent does), must
        # not touch the parent's socket, and gets a fresh lock, identity and thread.
        for queue in self.queues.values():
            queue.clear()
        self.series_book.renew_after_fork()
        self._renew_process_state()
        if not self._closing:
            self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="zibrato-publisher", daemon=True)
        self._thread.start()

    # -- the calling side ----------------------------------------------------------
    def series(
        self,
        level: str,
        kind: int,
        name: str,
        *,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        trusted: bool = False,
    ) -> Series | None:
        """Return the :class:`~zibrato.series.Series` to record bare values of one series
        into, made on first use; None when these fields cannot make one (invalid, a kind
        whose order matters across series, or too many series): record events instead,
        which counts what is invalid.

        ``level`` is a canonical level name; ``trusted``: the caller only ever records
        finite numbers (never a negative duration), so they are not checked again.
        """
        if (
            protocol.check_name(name) is not None
            or (source is not None and protocol.check_name(source) is not None)
            or (tags is not None and not protocol.valid_tags(tags))
        ):
            return None
        return self.series_book.series(level, kind, name, source=source, tags=tags, trusted=trusted)

    def series_overflow(self, series: Series, value: Any) -> None:
        """Record ``value`` past a series' wake threshold: wake the sender, enforce its bound."""
        values = series.values
        if self._closing:
            self.reject("closed", "recorded after close(); nothing sends it")
        elif len(values) < series.cap:
            values.append(value)
            if len(values) == 1:
                series.dirty.append(series)
        else:
            self.reject("buffer_full", f"more than {series.cap} values of {series.name!r} waiting")
        if not self._wake.is_set():
            self._wake.set()

    def overflow(self, queue: deque[Event], event: Event) -> None:
        """Record ``event`` past the wake threshold: wake the sender, enforce the bound."""
        if self._closing:
            self.reject("closed", "recorded after close(); nothing sends it")
        elif len(queue) < self.buffer_size:
            queue.append(event)
        else:
            self.reject("buffer_full", f"more than {self.buffer_size} events waiting to be sent")
        if not self._wake.is_set():
            self._wake.set()

    def reject(self, reason: str, detail: str, count: int = 1, *, warn: bool = True) -> None:
        """Count events that were not recorded; log the first of each reason (if ``warn``)."""
        self.counts.reject(reason, detail, count, warn=warn)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything recorded so far; wait at most ``timeout`` s for a broker."""
        if self._closing:
            self._count_recorded_after_close()
            return
        self._drain(self.startup_hold if timeout is None else timeout)

    def _count_recorded_after_close(self) -> None:
        # Nothing sends after close(): count what was recorded since, do not reconnect.
        pending = self._discard_queued()
        if pending:
            self.reject("closed", "recorded after close(); nothing sends it", pending)

    def _discard_queued(self) -> int:
        """Empty the queues and series and return how many events they held (one pop at a
        time: an event appended meanwhile by another thread is counted, never lost unseen)."""
        discarded = self.series_book.discard()
        for queue in self.queues.values():
            pop = queue.popleft
            try:
                while True:
                    pop()
                    discarded += 1
            except IndexError:
                pass
        return discarded

    @property
    def pending_events(self) -> int:
        """Events (and series' values) recorded and not yet sent or counted."""
        series = sum(len(s.values) for s in self.series_book.all())
        return series + sum(len(queue) for queue in self.queues.values())

    def send_now(self, timeout: float) -> None:
        """Send what is pending and wait until ZeroMQ has written it (at most ``timeout`` s).

        The connection is closed to learn that (what ZeroMQ had not written in time is
        counted as ``linger_expired``) and opened again by the next batch.
        """
        if self._closing or self._pid != os.getpid():
            return
        deadline = time.monotonic() + timeout
        self._drain(timeout)
        if self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self._close_link(max(0.0, deadline - time.monotonic()))
                self._link = self._sender.link = self._new_link()
            finally:
                self._lock.release()

    def close(self, linger: float | None = None) -> None:
        """Send what is pending with a bounded wait, then release the socket.

        Returns within ``linger`` (the wait for the broker) plus :data:`CLOSE_GRACE`.
        What could not be handed to ZeroMQ by then is counted as ``close_timeout``; what
        ZeroMQ may still have held when the linger ran out, as ``linger_expired`` (both
        leave ``sent_events``) and logged once.
        """
        if self._closing:
            return
        self._closing = True
        linger = self.linger if linger is None else linger
        try:
            if self._pid == os.getpid():
                self._close(linger)
        finally:
            self._closed = True
            lifecycle.forget(self)

    def _close(self, linger: float) -> None:
        start = time.monotonic()
        deadline, give_up = start + linger, start + linger + CLOSE_GRACE
        self._wake.set()  # the thread sees _closing and lets go of the link
        if not self._lock.acquire(timeout=give_up - start):
            self.counts.abandon(
                self._discard_queued,
                f"were not handed to ZeroMQ within close()'s {linger:g} s linger and "
                f"{CLOSE_GRACE:g} s of grace (a loaded machine?)",
            )
            return
        try:
            self._drain_final(deadline, give_up)
            self._sender.final_marks()
            now = time.monotonic()
            # Encoding a large backlog may have used up the linger: ZeroMQ still gets a
            # moment to write it (within the grace), rather than none.
            floor = min(linger, LAST_WRITE, max(0.0, give_up - now))
            self._close_link(max(deadline - now, floor))
        finally:
            self._lock.release()
        self._warn_no_broker(closing=True)

    def _close_link(self, wait: float) -> None:
        """Close the link (the lock is held); count what ZeroMQ may have held as lost."""
        unsent = self._link.close(wait)
        if unsent:
            self.counts.sent_events -= unsent
            self.reject(
                "linger_expired",
                f"up to {unsent} events may have been still queued in ZeroMQ for "
                f"{self.address} when the {wait:g} s linger ran out (the broker is down, "
                "frozen or too slow)",
                unsent,
            )

    # -- the background side -------------------------------------------------------
    def _is_closing(self) -> bool:
        return self._closing  # read through a call: close() flips it from another thread

    def _run(self) -> None:
        while not self._is_closing():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._is_closing():
                break
            if not self._lock.acquire(timeout=self.interval):
                continue  # a caller is flushing: nothing left for this round
            try:
                self._drain_locked(0.0, final=False, send_deadline=self._send_deadline())
            except Exception:  # never let the thread die: it is the only sender
                log.exception("zibrato: publisher failed to send a batch")
            finally:
                self._lock.release()
        with self._lock:
            if self.counts.abandoned:  # close() could not wait for us: the socket is ours
                self._link.close(0.0)

    def _send_deadline(self) -> float:
        return time.monotonic() + SEND_PATIENCE * self.interval

    def _drain(self, wait: float) -> None:
        """Send every pending event; wait up to ``wait`` s for the broker's subscriptions.

        Events recorded before the broker has told us its subscriptions stay buffered for
        up to ``startup_hold`` (``flush_all(release_held=True)`` sends them at once).
        """
        if self._pid != os.getpid():
            return  # a stale object in a child that was not reset: nothing of ours to send
        deadline = time.monotonic() + wait
        if not self._lock.acquire(timeout=wait if wait > 0 else -1):
            return
        try:
            self._drain_locked(deadline, final=False, send_deadline=self._send_deadline())
        finally:
            self._lock.release()

    def drain_now(self, timeout: float, *, release_held: bool = False) -> None:
        """Send what is pending now (``flush_all``); ``release_held``: also what waits
        for a broker's subscriptions (sent, or counted)."""
        if self._closing or self._pid != os.getpid():
            return
        if not self._lock.acquire(timeout=timeout if timeout > 0 else -1):
            return
        try:
            self._drain_locked(
                time.monotonic() + timeout, final=release_held, send_deadline=self._send_deadline()
            )
        finally:
            self._lock.release()

    def _drain_final(self, deadline: float, give_up: float) -> None:
        """Send everything before closing (the lock is held); count what did not fit."""
        self._drain_locked(deadline, final=True, send_deadline=deadline, stop_at=give_up)
        pending = self._discard_queued()
        if pending:
            self.reject(
                "close_timeout",
                f"{pending} events could not be encoded and handed to ZeroMQ within "
                f"close()'s linger and {CLOSE_GRACE:g} s of grace (a loaded machine?)",
                pending,
            )

    def _drain_locked(
        self,
        wait_until: float,
        *,
        final: bool,
        send_deadline: float,
        stop_at: float | None = None,
    ) -> None:
        """Send every pending value and event (the lock is held).

        Unless ``final`` (close, or a capture starting), what was recorded before the broker
        has told us its subscriptions stays buffered for up to ``startup_hold``. The thread
        stops between batches, with the rest left for close(), when close() begins; a final
        drain stops at ``stop_at``.
        """
        sink = _capture_sink
        if sink is None and self._has_pending():
            self._link.read_subscriptions(wait_until)
            if self._link.holding() and not final:
                return  # keep the events: the broker has not told us its subscribers yet
        else:
            self._link.poll_events()
        book = self.series_book
        for level, queue in self.queues.items():
            dirty = book.dirty[level]
            while dirty or queue:
                if (stop_at is not None and time.monotonic() >= stop_at) or (
                    not final and self._closing
                ):
                    return
                counts = self.counts
                with counts.lock:  # taken and in hand at once: close() may count both
                    if dirty:
                        taken, count = book.take(level, self.batch_size)
                        events = None
                    else:
                        events = _take(queue, self.batch_size)
                        count = len(events)
                    counts.in_hand += count
                try:
                    if events is None:
                        self._sender.series(level, taken, sink, send_deadline)
                    else:
                        self._sender.events(level, events, sink, send_deadline)
                except Exception as exc:  # never raise into flush()/close() callers
                    counts.reject_in_hand("send_failed", f"{type(exc).__name__}: {exc}", -1)
                counts.settle_in_hand()
        if sink is None:  # a capture reads the drop counts directly
            self._sender.drop_report(self._send_deadline())
        if not final:
            self._warn_no_broker(closing=False)

    def _warn_no_broker(self, *, closing: bool) -> None:
        """Say once that no broker answers, a few seconds in (or at close, if sooner)."""
        if self._warned_no_broker or not self.dropped.get("no_broker"):
            return
        if not closing and self._link.connected_for() < NO_BROKER_WARNING_AFTER:
            return
        self._warned_no_broker = True
        refused = f" ({self._link.refused})" if self._link.refused else ""
        log.warning(
            "zibrato: no broker answers at %s%s; start one with `%s` (or point "
            "ZIBRATO_PUBLISH at one). Until one answers, events are dropped and counted "
            "as %s{reason=no_broker}",
            self.address,
            refused,
            self.broker_hint,
            DROPPED_METRIC,
        )

    def _has_pending(self) -> bool:
        return (
            any(self.queues.values())
            or self.series_book.has_pending()
            or bool(self.counts.unpublished)
        )


def _publisher_defaults(
    source: object, tags: Mapping[Any, Any] | None
) -> tuple[str | None, dict[str, str] | None]:
    """Return the client-wide source and tags as strings; warn about (and drop) bad ones.

    Every batch carries these, so a bad one would make backends refuse every batch.
    """
    if source is not None:
        source = str(source)
        if protocol.check_name(source):
            log.warning("zibrato: ignoring the client source %r: not a valid name", source)
            source = None
    clean: dict[str, str] = {}
    for key, value in (tags or {}).items():
        key, value = str(key), str(value)
        if protocol.valid_tags({key: value}) and len(clean) < protocol.MAX_TAGS:
            clean[key] = value
        else:
            log.warning("zibrato: ignoring the client tag %r=%r: too long or empty", key, value)
    return source, clean or None


def _take(queue: deque[Event], count: int) -> list[Event]:
    """Pop up to ``count`` events off the left of ``queue`` (in C: no loop in Python)."""
    return list(starmap(queue.popleft, repeat((), min(count, len(queue)))))


# -- process-wide plumbing ---------------------------------------------------------
# Every publisher of this process, as lifecycle tracks them.
_live: weakref.WeakSet[Publisher] = lifecycle.live  # type: ignore[assignment]
_capture_sink: CaptureSink | None = None


def live_publishers() -> list[Publisher]:
    """Return every publisher of this process that is not closed."""
    return list(_live)


def capture_sink() -> CaptureSink | None:
    """Return where every publisher's events go instead of the network (None: nowhere)."""
    return _capture_sink


def set_capture_sink(sink: CaptureSink | None) -> None:
    """Route every publisher's events to ``sink`` (None: back to the network)."""
    global _capture_sink
    _capture_sink = sink


def flush_all(timeout: float = 0.0, *, release_held: bool = False) -> None:
    """Drain every live publisher of this process now.

    ``release_held`` also sends (or counts) events held while waiting for a broker.
    """
    for publisher in live_publishers():
        publisher.drain_now(timeout, release_held=release_held)
