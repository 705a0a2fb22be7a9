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

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from itertools import repeat, starmap
from math import isfinite
from typing import Any, Protocol

from zibrato import levels, lifecycle, protocol
from zibrato.addresses import DEFAULT_FRONTEND
from zibrato.batching import BatchChecker, expanded, on_the_wire
from zibrato.link import BrokerLink
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER, Event
from zibrato.series import Series, SeriesBook

log = logging.getLogger("zibrato")

DROPPED_METRIC = "zibrato.publisher.dropped"
DROPPED_LEVEL = "warning"
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
_NUMBER_TYPES = frozenset((int, float))


class CaptureSink(Protocol):
    """Where drained events go instead of the network (``zibrato.testing`` uses this)."""

    def receive(
        self,
        level: str,
        source: str | None,
        tags: Mapping[str, str] | None,
        events: Sequence[Event],
    ) -> None: ...


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
        self.dropped: dict[str, int] = {}
        self.sent_events = 0
        self.sent_batches = 0
        self.filtered_events = 0
        self._unpublished_drops: dict[str, int] = {}
        self._warned: set[str] = set()
        self._warned_no_broker = False
        self._checker = BatchChecker(self._reject_in_hand)
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
        self._lock = threading.Lock()  # held by whoever drives the link
        self._counts_lock = threading.Lock()  # counts that several threads update
        self._wake = threading.Event()
        self._pid = os.getpid()
        self.publisher_id = f"{self._pid:x}-{os.urandom(4).hex()}"
        self._seq = dict.fromkeys(levels.LEVELS, 0)
        self._sent_before = dict.fromkeys(levels.LEVELS, 0)
        # Events taken off a queue by the thread and not yet counted anywhere; and whether
        # close() gave up waiting and counted them (and the queues) itself.
        self._in_hand = 0
        self._abandoned = False
        # A forked child never touches the parent's link: its I/O thread is gone.
        self._link = BrokerLink(
            self.address, sndhwm=self.sndhwm, startup_hold=self.startup_hold, curve=self.curve
        )
        self._thread: threading.Thread | None = None

    def after_fork_in_child(self) -> None:
        """Renew what belongs to one process (lifecycle calls it in a forked child)."""
        # The child must not send what the parent had buffered (the parent does), must
        # not touch the parent's socket, and gets a fresh lock, identity and thread.
        for queue in self.queues.values():
            queue.clear()
        self.series_book.renew_after_fork()
        self._renew_process_state()
        # The child's counts start at zero: the parent's are the parent's to report.
        self.dropped, self._unpublished_drops = {}, {}
        self.sent_events = self.sent_batches = self.filtered_events = 0
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
        with self._counts_lock:
            first = self._count_dropped(reason, count) and warn
        if first:
            self._log_first_drop(reason, detail)

    def _count_dropped(self, reason: str, count: int) -> bool:
        """Add to the drop counts (the counts lock is held); whether it is the first."""
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        self._unpublished_drops[reason] = self._unpublished_drops.get(reason, 0) + count
        if reason in self._warned:
            return False
        self._warned.add(reason)
        return True

    def _log_first_drop(self, reason: str, detail: str) -> None:
        log.warning(
            "zibrato: dropped a metric (%s): %s; further drops are counted in %s and not logged",
            reason,
            detail,
            DROPPED_METRIC,
        )

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
                self._link = BrokerLink(
                    self.address,
                    sndhwm=self.sndhwm,
                    startup_hold=self.startup_hold,
                    curve=self.curve,
                )
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
            self._abandon(linger)
            return
        try:
            self._drain_final(deadline, give_up)
            self._send_final_marks()
            now = time.monotonic()
            # Encoding a large backlog may have used up the linger: ZeroMQ still gets a
            # moment to write it (within the grace), rather than none.
            floor = min(linger, LAST_WRITE, max(0.0, give_up - now))
            self._close_link(max(deadline - now, floor))
        finally:
            self._lock.release()
        self._warn_no_broker(closing=True)

    def _abandon(self, linger: float) -> None:
        """Give up on a thread that keeps the link: count whatever it has not sent as lost."""
        with self._counts_lock:
            self._abandoned = True
            pending = self._in_hand + self._discard_queued()
            self._in_hand = 0
            first = pending > 0 and self._count_dropped("close_timeout", pending)
        if first:
            self._log_first_drop(
                "close_timeout",
                f"{pending} events were not handed to ZeroMQ within close()'s "
                f"{linger:g} s linger and {CLOSE_GRACE:g} s of grace (a loaded machine?)",
            )

    def _close_link(self, wait: float) -> None:
        """Close the link (the lock is held); count what ZeroMQ may have held as lost."""
        unsent = self._link.close(wait)
        if unsent:
            self.sent_events -= unsent
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
            if self._abandoned:  # close() could not wait for us: the socket is ours to close
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
                with self._counts_lock:  # taken and in hand at once: close() may count both
                    if dirty:
                        taken, count = book.take(level, self.batch_size)
                        events = None
                    else:
                        events = _take(queue, self.batch_size)
                        count = len(events)
                    self._in_hand += count
                try:
                    if events is None:
                        self._send_series(level, taken, sink, send_deadline)
                    else:
                        self._send(level, events, sink, send_deadline)
                except Exception as exc:  # never raise into flush()/close() callers
                    self._reject_in_hand("send_failed", f"{type(exc).__name__}: {exc}", -1)
                self._settle_in_hand()
        self._send_drop_report(sink)
        if not final:
            self._warn_no_broker(closing=False)

    # -- accounting of the batch in hand ------------------------------------------
    def _reject_in_hand(
        self, reason: str, detail: str, count: int = 1, *, warn: bool = True
    ) -> None:
        """Count ``count`` events of the batch in hand as dropped (-1: all that is left)."""
        with self._counts_lock:
            if self._abandoned:
                return  # close() counted them already
            if count < 0:
                count = self._in_hand
            self._in_hand -= count
            first = self._count_dropped(reason, count) and warn
        if first:
            self._log_first_drop(reason, detail)

    def _count_in_hand(self, sent: int = 0, filtered: int = 0, captured: int = 0) -> None:
        """Move events of the batch in hand to their count (a capture's are not counted)."""
        with self._counts_lock:
            if self._abandoned:
                return
            self._in_hand -= sent + filtered + captured
            self.sent_events += sent
            self.sent_batches += 1 if sent else 0
            self.filtered_events += filtered

    def _settle_in_hand(self) -> None:
        with self._counts_lock:
            if self._in_hand and not self._abandoned:  # a path that forgot to count: say so
                log.error("zibrato: %d events of a batch were not accounted for", self._in_hand)
                self._count_dropped("internal_error", self._in_hand)
            self._in_hand = 0

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
            or bool(self._unpublished_drops)
        )

    def _send_drop_report(self, sink: CaptureSink | None) -> None:
        # The report waits (merged with later drops) until a subscriber listens for it;
        # a capture reads the drop counts directly instead.
        if not self._unpublished_drops or sink is not None:
            return
        if DROPPED_LEVEL not in self._link.subscribed:
            return
        with self._counts_lock:
            report, self._unpublished_drops = self._unpublished_drops, {}
            self._in_hand += len(report)
        events: list[Event] = [
            (COUNTER, DROPPED_METRIC, count, None, {"reason": reason})
            for reason, count in report.items()
        ]
        self._send(DROPPED_LEVEL, events, sink, self._send_deadline())
        self._settle_in_hand()

    def _send(
        self, level: str, events: list[Event], sink: CaptureSink | None, deadline: float
    ) -> None:
        """Send one batch of queued events (in hand), or count why it is not sent."""
        events, wire = self._checker.checked(events)
        if not events:
            return
        if sink is not None:
            sink.receive(level, self.source, self.tags, events)
            self._count_in_hand(captured=len(events))
        elif not self._unsendable(level, len(events)):
            self._send_frames(level, events, deadline, wire)

    def _send_series(
        self,
        level: str,
        taken: list[tuple[Series, list[Any]]],
        sink: CaptureSink | None,
        deadline: float,
    ) -> None:
        """Send the values taken from series (in hand), or count why they are not sent."""
        wire, count = self._series_wire(taken, check_all=False)
        if not wire:
            return
        if sink is not None:
            sink.receive(level, self.source, self.tags, list(expanded(wire)))
            self._count_in_hand(captured=count)
        elif not self._unsendable(level, count):
            try:
                frames = self._encode(level, wire)
            except (OverflowError, TypeError, ValueError):
                # Something the quick check let through (a huge integer, say): check fully.
                wire, count = self._series_wire(taken, check_all=True)
                if not wire:
                    return
                frames = self._encode(level, wire)
            self._send_encoded(level, frames, count, deadline)

    def _series_wire(
        self, taken: list[tuple[Series, list[Any]]], *, check_all: bool
    ) -> tuple[list[Event], int]:
        """Return the wire form of values taken from series, and how many values it holds.

        An untrusted series' values are checked (``check_all``: every value, one by one);
        the invalid ones are counted by reason, in hand.
        """
        wire: list[Event] = []
        count = 0
        for series, values in taken:
            if check_all or not series.trusted:
                values = self._checked_values(series, values, one_by_one=check_all)
                if not values:
                    continue
            wire.append(
                (
                    series.kind,
                    series.name,
                    values if len(values) > 1 else values[0],
                    series.source,
                    series.tags,
                )
            )
            count += len(values)
        return wire, count

    def _checked_values(
        self, series: Series, values: list[Any], *, one_by_one: bool = False
    ) -> list[Any]:
        """Return a series' values that are valid; count the others (by reason, in hand)."""
        try:
            if (
                not one_by_one
                and _NUMBER_TYPES.issuperset(map(type, values))
                and all(map(isfinite, values))
                and (series.kind != TIMER or min(values) >= 0)
            ):
                return values
        except (OverflowError, TypeError, ValueError):  # a huge integer, say
            pass
        events = [(series.kind, series.name, value, series.source, series.tags) for value in values]
        return [event[2] for event in self._checker.drop_invalid(events)]

    def _unsendable(self, level: str, count: int) -> bool:
        """Count ``count`` events in hand that cannot go to a subscriber, and say so."""
        link = self._link
        if level in link.subscribed:
            return False
        if (refusal := link.refusal()) is not None:
            self._reject_in_hand(*refusal, count)  # CURVE: the broker turned us down
        elif link.error is not None:
            self._reject_in_hand("invalid_address", link.error, count)
        elif not link.ever_subscribed and not link.handshakes:
            # No broker has ever answered (the startup hold is over): the events are lost.
            self._reject_in_hand("no_broker", "", count, warn=False)  # one warning of its own
        else:
            if level in link.ever_subscribed:
                # The broker or its subscribers went away: these events are lost on the
                # way, so advance the count that lets a returning subscriber see the gap.
                self._sent_before[level] += count
            self._count_in_hand(filtered=count)
        return True

    def _send_frames(
        self,
        level: str,
        events: Sequence[Event],
        deadline: float,
        wire: Sequence[Event] | None = None,
    ) -> None:
        """Send ``events`` (checked) as one batch, in their ``wire`` form (value lists)."""
        try:
            frames = self._encode(level, on_the_wire(events) if wire is None else wire)
        except (OverflowError, TypeError, ValueError):
            # Something the quick check let through (a huge integer, say): check fully.
            kept = self._checker.drop_invalid(events)
            if not kept:
                return
            events, frames = kept, self._encode(level, on_the_wire(kept))
        if len(frames[1]) > protocol.MAX_MESSAGE_BYTES and len(events) > 1:
            half = len(events) // 2
            self._send_frames(level, events[:half], deadline)
            self._send_frames(level, events[half:], deadline)
            return
        self._send_encoded(level, frames, len(events), deadline)

    def _send_encoded(self, level: str, frames: list[bytes], count: int, deadline: float) -> None:
        """Hand one encoded batch of ``count`` events to ZeroMQ, retrying while its queue is
        full until ``deadline``; count it sent, or dropped."""
        while not self._link.send(frames, count):
            if time.monotonic() >= deadline:
                self._reject_in_hand(
                    "send_queue_full", "the ZeroMQ send queue to the broker is full", count
                )
                return
            time.sleep(0.002)
        self._seq[level] += 1
        self._sent_before[level] += count
        self._count_in_hand(sent=count)

    def _send_final_marks(self) -> None:
        """Send each level's final count as an empty batch (the lock is held): a backend
        that receives it knows exactly how many of our events it missed, to the last."""
        for level, seq in self._seq.items():
            if seq and level in self._link.subscribed:
                self._link.send(self._encode(level, []), 0)

    def _encode(self, level: str, events: Sequence[Event]) -> list[bytes]:
        return protocol.encode(
            level,
            self.publisher_id,
            self._seq[level],
            self._sent_before[level],
            time.time(),
            self.source,
            self.tags,
            events,
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
# Every publisher of this process (zibrato.testing reads it), as lifecycle tracks them.
_live: weakref.WeakSet[Publisher] = lifecycle.live  # type: ignore[assignment]
_capture_sink: CaptureSink | None = None


def set_capture_sink(sink: CaptureSink | None) -> None:
    """Route every publisher's events to ``sink`` (None: back to the network)."""
    global _capture_sink
    _capture_sink = sink


def flush_all(timeout: float = 0.0, *, release_held: bool = False) -> None:
    """Drain every live publisher of this process now.

    ``release_held`` also sends (or counts) events held while waiting for a broker.
    """
    for publisher in list(_live):
        if publisher._closing or publisher._pid != os.getpid():
            continue
        if not publisher._lock.acquire(timeout=timeout if timeout > 0 else -1):
            continue
        try:
            publisher._drain_locked(
                time.monotonic() + timeout,
                final=release_held,
                send_deadline=publisher._send_deadline(),
            )
        finally:
            publisher._lock.release()
