"""Hand events from the instrumented process to ZeroMQ without blocking it.

The calling thread only appends a tuple to a per-level ``deque`` (atomic under the GIL,
and safe for any number of threads). A daemon thread wakes every ``interval`` seconds
(sooner when a level's backlog passes ``wake_threshold``), drains the deques into
batches, checks them, and sends them through the :class:`~zibrato.link.BrokerLink`.
Whatever is not delivered is counted by reason in ``dropped`` and reported as the
counter ``zibrato.publisher.dropped``; that includes what ZeroMQ still held when
``close()``'s linger ran out (``linger_expired``), which is then no longer counted as sent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from math import isfinite
from typing import Any, Protocol

from zibrato import levels, lifecycle, protocol
from zibrato.addresses import DEFAULT_FRONTEND
from zibrato.link import BrokerLink
from zibrato.protocol import COUNTER, DISTRIBUTION, TIMER, Event

log = logging.getLogger("zibrato")

DROPPED_METRIC = "zibrato.publisher.dropped"
DROPPED_LEVEL = "warning"
# Kinds whose values of one batch travel as one event per series (a value list).
_GROUPED_KINDS = frozenset((TIMER, DISTRIBUTION))
_INF = float("inf")
_NUMBER_TYPES = frozenset((int, float))
_MAX_REMEMBERED = 10_000
# How long a client waits for any broker before it says (once) that none answers.
NO_BROKER_WARNING_AFTER = 3.0
# What that warning tells a user to run; an adapter names its own command.
DEFAULT_BROKER_HINT = "zibrato run"


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
        sndhwm: int = 1000,
        curve: str | os.PathLike[str] | None = None,
        broker_hint: str = DEFAULT_BROKER_HINT,
    ) -> None:
        self.address = address
        self.broker_hint = broker_hint  # how to start a broker, for the "no broker" warning
        self.curve = curve  # a CURVE keys directory (zibrato.security.curve); None: no CURVE
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
        self._valid_names: set[str] = set()
        self._valid_tags: set[tuple[tuple[str, str], ...]] = set()
        self._lock = threading.Lock()  # guards the socket and the sequence numbers
        self._drops_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._abandoned = False
        self._reset_process_state()
        lifecycle.track(self)
        self._start_thread()

    # -- process state, renewed in a forked child ---------------------------------
    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self.publisher_id = f"{self._pid:x}-{os.urandom(4).hex()}"
        self._seq = dict.fromkeys(levels.LEVELS, 0)
        self._sent_before = dict.fromkeys(levels.LEVELS, 0)
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
        self._lock = threading.Lock()
        self._drops_lock = threading.Lock()
        self._wake = threading.Event()
        self._reset_process_state()
        # The child's counts start at zero: the parent's are the parent's to report.
        self.dropped, self._unpublished_drops = {}, {}
        self.sent_events = self.sent_batches = self.filtered_events = 0
        if not self._closed:
            self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="zibrato-publisher", daemon=True)
        self._thread.start()

    # -- the calling side ----------------------------------------------------------
    def overflow(self, queue: deque[Event], event: Event) -> None:
        """Record ``event`` past the wake threshold: wake the sender, enforce the bound."""
        if self._closed:
            self.reject("closed", "recorded after close(); nothing sends it")
        elif len(queue) < self.buffer_size:
            queue.append(event)
        else:
            self.reject("buffer_full", f"more than {self.buffer_size} events waiting to be sent")
        if not self._wake.is_set():
            self._wake.set()

    def reject(self, reason: str, detail: str, count: int = 1, *, warn: bool = True) -> None:
        """Count events that were not recorded; log the first of each reason (if ``warn``)."""
        with self._drops_lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count
            self._unpublished_drops[reason] = self._unpublished_drops.get(reason, 0) + count
            first = warn and reason not in self._warned
            if first:
                self._warned.add(reason)
        if first:
            log.warning(
                "zibrato: dropped a metric (%s): %s; further drops are counted "
                "in %s and not logged",
                reason,
                detail,
                DROPPED_METRIC,
            )

    def flush(self, timeout: float | None = None) -> None:
        """Send everything recorded so far; wait at most ``timeout`` s for a broker."""
        if self._closed:
            # Nothing sends after close(): count what was recorded since, do not reconnect.
            pending = sum(len(queue) for queue in self.queues.values())
            for queue in self.queues.values():
                queue.clear()
            if pending:
                self.reject("closed", "recorded after close(); nothing sends it", pending)
            return
        self._drain(self.startup_hold if timeout is None else timeout)

    @property
    def queued_events(self) -> int:
        """Events counted as sent that ZeroMQ has not written to the broker connection yet."""
        return self._link.queued_events

    def close(self, linger: float | None = None) -> None:
        """Send what is pending with a bounded wait, then release the socket.

        What ZeroMQ still holds when the linger runs out is thrown away: it moves from
        ``sent_events`` to ``dropped["linger_expired"]`` and is logged once.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._close(self.linger if linger is None else linger)
        finally:
            lifecycle.forget(self)

    def send_now(self, timeout: float) -> None:
        """Send what is pending and wait until ZeroMQ has written it (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        if self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self._link.wait_written(deadline)
            finally:
                self._lock.release()

    def _close(self, linger: float) -> None:
        self._wake.set()
        deadline = time.monotonic() + linger
        self._drain(linger, final=True)
        if self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            try:
                self._close_link(max(0.0, deadline - time.monotonic()), linger)
            finally:
                self._lock.release()
        else:
            # The sender thread is busy: it closes the socket when it is done, unless it
            # is already gone (then the lock is free again).
            self._abandoned = True
            thread = self._thread
            if (thread is None or not thread.is_alive()) and self._lock.acquire(timeout=0.05):
                try:
                    self._close_link(0.0, linger)
                finally:
                    self._lock.release()
        self._warn_no_broker(closing=True)

    def _close_link(self, wait: float, linger: float) -> None:
        """Close the link (the lock is held); count what ZeroMQ still held as not sent."""
        unsent = self._link.close(wait)
        if unsent:
            self.sent_events -= unsent
            self.reject(
                "linger_expired",
                f"{unsent} events were still queued in ZeroMQ for {self.address} when the "
                f"{linger:g} s linger ran out (the broker is down, frozen or too slow)",
                unsent,
            )

    # -- the background side -------------------------------------------------------
    def _is_closed(self) -> bool:
        return self._closed  # read through a call: close() flips it from another thread

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._is_closed():
                break
            try:
                self._drain(0.0)
            except Exception:  # never let the thread die: it is the only sender
                log.exception("zibrato: publisher failed to send a batch")
        with self._lock:
            if self._abandoned:  # close() could not wait for us: the socket is ours to close
                self._close_link(0.0, self.linger)

    def _drain(self, wait: float, final: bool = False) -> None:
        """Send every pending event; wait up to ``wait`` s for the broker's subscriptions.

        Unless ``final`` (close, or a capture starting), events recorded before the broker
        has told us its subscriptions stay buffered for up to ``startup_hold``.
        """
        if self._pid != os.getpid():
            return  # a stale object in a child that was not reset: nothing of ours to send
        deadline = time.monotonic() + wait
        if not self._lock.acquire(timeout=wait if wait > 0 else -1):
            return
        # How long a full ZeroMQ queue may hold us up: the linger when closing; on the
        # background thread a few intervals (the application is never the one waiting).
        send_deadline = deadline if final else time.monotonic() + 4 * self.interval
        try:
            sink = _capture_sink
            if sink is None and self._has_pending():
                self._link.read_subscriptions(deadline)
                if self._link.holding() and not final:
                    return  # keep the events: the broker has not told us its subscribers yet
            else:
                self._link.poll_events()
            for level, queue in self.queues.items():
                while queue:
                    events = _take(queue, self.batch_size)
                    try:
                        self._send(level, events, sink, final, send_deadline)
                    except Exception as exc:  # never raise into flush()/close() callers
                        self.reject("send_failed", f"{type(exc).__name__}: {exc}", len(events))
            self._send_drop_report(sink)
            if not final:
                self._warn_no_broker(closing=False)
        finally:
            self._lock.release()

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
        return any(self.queues.values()) or bool(self._unpublished_drops)

    def _send_drop_report(self, sink: CaptureSink | None) -> None:
        # The report waits (merged with later drops) until a subscriber listens for it;
        # a capture reads the drop counts directly instead.
        if not self._unpublished_drops or sink is not None:
            return
        if DROPPED_LEVEL not in self._link.subscribed:
            return
        with self._drops_lock:
            report, self._unpublished_drops = self._unpublished_drops, {}
        events: list[Event] = [
            (COUNTER, DROPPED_METRIC, count, None, {"reason": reason})
            for reason, count in report.items()
        ]
        self._send(DROPPED_LEVEL, events, sink)

    def _send(
        self,
        level: str,
        events: list[Event],
        sink: CaptureSink | None,
        final: bool = False,
        send_deadline: float = 0.0,
    ) -> None:
        events, wire = self._checked(events)
        if not events:
            return
        link = self._link
        if sink is not None:
            sink.receive(level, self.source, self.tags, events)
        elif level in link.subscribed:
            self._send_frames(level, events, send_deadline, wire)
        elif (refusal := link.refusal()) is not None:
            self.reject(*refusal, len(events))  # CURVE: the broker turned us down
        elif link.error is not None:
            self.reject("invalid_address", link.error, len(events))
        elif not link.ever_subscribed and not link.handshakes:
            # No broker has ever answered (the startup hold is over): the events are lost.
            self.reject(
                "no_broker", f"no broker answered at {self.address}", len(events), warn=False
            )
        else:
            self.filtered_events += len(events)
            if level in self._link.ever_subscribed:
                # The broker or its subscribers went away: these events are lost on the
                # way, so advance the count that lets a returning subscriber see the gap.
                self._sent_before[level] += len(events)

    def _send_frames(
        self,
        level: str,
        events: Sequence[Event],
        deadline: float,
        wire: Sequence[Event] | None = None,
    ) -> None:
        """Send ``events`` (checked) as one batch, in their ``wire`` form (value lists)."""
        try:
            frames = self._encode(level, _on_the_wire(events) if wire is None else wire)
        except (OverflowError, TypeError, ValueError):
            # Something the quick check let through (a huge integer, say): check fully.
            events = self._drop_invalid(events)
            if not events:
                return
            frames = self._encode(level, _on_the_wire(events))
        if len(frames[1]) > protocol.MAX_MESSAGE_BYTES and len(events) > 1:
            half = len(events) // 2
            self._send_frames(level, events[:half], deadline)
            self._send_frames(level, events[half:], deadline)
            return
        if not self._link.send(frames, len(events), deadline):
            self.reject(
                "send_queue_full", "the ZeroMQ send queue to the broker is full", len(events)
            )
            return
        self._seq[level] += 1
        self._sent_before[level] += len(events)
        self.sent_batches += 1
        self.sent_events += len(events)

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

    def _checked(self, events: list[Event]) -> tuple[list[Event], list[Event]]:
        """Return ``events`` without the invalid ones (each counted and logged once), and
        their wire form: each timer's and distribution's values in one event per series.

        Runs on the publisher thread, off the calling thread. Names and tag sets already
        seen valid are remembered, so the common case costs a few lookups per series and
        one per event.
        """
        wire = self._wire_if_known_valid(events)
        if wire is not None:
            return events, wire
        events = self._drop_invalid(events)
        return events, _on_the_wire(events)

    def _drop_invalid(self, events: Sequence[Event]) -> list[Event]:
        good = []
        for event in events:
            tags = event[4]
            if tags is not None and not isinstance(tags, dict) and isinstance(tags, Mapping):
                # any mapping will do; msgpack wants a dict
                event = (*event[:4], dict(tags), *event[5:])
            if type(event[2]) is timedelta and event[0] == TIMER:
                event = (event[0], event[1], event[2].total_seconds(), *event[3:])
            reason = protocol.check_event(event)
            if reason is None and event[0] == TIMER and event[2] < 0:
                reason = "negative_duration"
            if reason is None:
                good.append(event)
                self._remember_valid(event)
            else:
                self.reject(reason, f"{event[1]!r} = {event[2]!r}"[:200])
        return good

    def _wire_if_known_valid(self, events: list[Event]) -> list[Event] | None:
        """Return the wire form of ``events`` if every one is known valid, else None.

        Known valid: its name, source and tags were seen valid before, and its value is a
        finite number (a timer's never negative). Grouped into value lists first, so that
        a timer's or distribution's name and tags are looked up once per series and batch.
        """
        names, tag_sets = self._valid_names, self._valid_tags
        # The same few dict objects are usually passed call after call (a web adapter's
        # cached tags alternate): check each once per batch, which holds them alive.
        checked_tags: set[int] = set()
        try:
            wire = _grouped(events)
            for kind, name, value, source, tags in wire:  # sampled: six fields, checked fully
                if type(value) is list:  # a series' values (in C: map and set)
                    if not _NUMBER_TYPES.issuperset(map(type, value)) or not all(
                        map(isfinite, value)
                    ):
                        return None
                    # Checked here, on this thread, so that timing() costs its caller nothing.
                    if kind == TIMER and min(value) < 0:
                        return None
                elif not ((type(value) is int or type(value) is float) and -_INF < value < _INF):
                    return None
                if name not in names or (source is not None and source not in names):
                    return None
                if tags is not None and id(tags) not in checked_tags:
                    if _tags_key(tags) not in tag_sets:
                        return None
                    checked_tags.add(id(tags))
        except (TypeError, AttributeError, ValueError, IndexError, KeyError, OverflowError):
            return None  # unhashable, not a mapping, sampled, a huge integer
        return _collapsed(wire)

    def _remember_valid(self, event: Event) -> None:
        if len(self._valid_names) > _MAX_REMEMBERED or len(self._valid_tags) > _MAX_REMEMBERED:
            self._valid_names.clear()  # bounded memory even when names are unbounded
            self._valid_tags.clear()
        self._valid_names.add(event[1])
        if event[3] is not None:
            self._valid_names.add(event[3])
        if event[4] is not None:
            self._valid_tags.add(_tags_key(event[4]))


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


def _tags_key(tags: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(tags.items())


def _on_the_wire(events: Sequence[Event]) -> list[Event]:
    """Return checked ``events`` with each timer's and distribution's values of the batch in
    one event per series (kind, name, source, tags object), as :func:`protocol.decode`
    expands them again. Other events, and sampled ones, go as they are.
    """
    return _collapsed(_grouped(events))


def _grouped(events: Sequence[Event]) -> list[Event]:
    """Return ``events`` with each timer's and distribution's values in a list per series
    (a list even for one value, so that a value that is itself a list stays an error)."""
    wire: list[Event] = []
    series: dict[tuple[Any, ...], list[Any]] = {}
    for event in events:
        if len(event) == 5:
            kind, name, value, source, tags = event
            if kind in _GROUPED_KINDS:
                key = (kind, name, source, id(tags))
                values = series.get(key)
                if values is not None:
                    values.append(value)
                else:
                    series[key] = values = [value]
                    wire.append((kind, name, values, source, tags))
                continue
        wire.append(event)
    return wire


def _collapsed(wire: list[Event]) -> list[Event]:
    """Return ``wire`` with each series of one value sent as a plain event."""
    return [
        (event[0], event[1], event[2][0], event[3], event[4])
        if len(event) == 5 and type(event[2]) is list and len(event[2]) == 1
        else event
        for event in wire
    ]


def _take(queue: deque[Event], count: int) -> list[Event]:
    pop = queue.popleft
    return [pop() for _ in range(min(count, len(queue)))]


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
        publisher._drain(timeout, final=release_held)
