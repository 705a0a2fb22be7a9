"""The publisher's connection to the broker: an XPUB socket and what it has learnt.

XPUB rather than PUB because it tells us which levels anybody subscribes to: the
publisher drops unsubscribed levels before encoding anything, and holds what was recorded
before the broker has spoken (ZeroMQ's "slow joiner" window) instead of losing it.
One link lives in one process: a forked child makes its own.

ZeroMQ says nothing about what it still holds, so the link tracks it: every batch is
sent zero-copy with a pyzmq ``MessageTracker``, which completes once libzmq has let go
of the message (its I/O thread wrote it to the connection, or copied it into its last
write buffer of 8 KB). What has no completed tracker when :meth:`BrokerLink.close`
gives up is what ZeroMQ throws away: close() returns that count so that it is reported,
not claimed as sent. Tracking costs the publisher thread some 40 µs per batch.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque

import zmq

from zibrato import levels
from zibrato.errors import ConfigError
from zibrato.security.curve import client_keys
from zibrato.security.handshake import CURVE_KEYS, HandshakeMonitor, Problem
from zibrato.security.policy import apply_handshake_policy


class BrokerLink:
    """Connect lazily to ``address``; track subscriptions; send without blocking.

    >>> link = BrokerLink("tcp://127.0.0.1:5550")        # doctest: +SKIP
    >>> link.read_subscriptions(deadline=time.monotonic() + 1)
    >>> "info" in link.subscribed
    True
    """

    def __init__(
        self,
        address: str,
        *,
        sndhwm: int = 1000,
        startup_hold: float = 1.0,
        curve: str | os.PathLike[str] | None = None,
    ) -> None:
        self.address = address
        self.sndhwm = sndhwm
        self.startup_hold = startup_hold
        self.curve = curve  # a CURVE keys directory (zibrato.security.curve); None: no CURVE
        self.subscribed: set[str] = set()
        self.ever_subscribed: set[str] = set()
        self.error: str | None = None  # why the address cannot be connected to
        self._keys_problem: Problem | None = None  # our CURVE keys cannot be used
        # Our own context: closing terminates it, which is what makes ZeroMQ honour the
        # linger (the process may exit right after; the I/O thread must finish first).
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        # The socket's one monitor: handshakes, refusals, reconnecting after a refusal.
        self._handshake: HandshakeMonitor | None = None
        self._connected_at = 0.0
        self._closed = False
        # (tracker, events in its batch) in send order; untracked: sent without a tracker.
        self._in_flight: deque[tuple[zmq.MessageTracker, int]] = deque()
        self._in_flight_lock = threading.Lock()  # stats() reads it from any thread
        self._untracked_events = 0

    def _connect(self) -> zmq.Socket[bytes] | None:
        """Return the connected socket; None when the address cannot be connected to."""
        if self._socket is None and self.error is None and not self._closed:
            try:
                keys = client_keys(self.curve) if self.curve is not None else None
            except ConfigError as exc:  # nothing goes out unencrypted: no socket at all
                self.error = str(exc)
                self._keys_problem = (CURVE_KEYS, f"cannot use CURVE keys: {exc}")
                return None
            if self._context is None:
                self._context = zmq.Context(io_threads=1)
            sock = self._context.socket(zmq.XPUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue raises Again: we count it
            sock.copy_threshold = 0  # a tracked send must be zero-copy at any size
            apply_handshake_policy(sock, keys)
            # Handshake events tell "no broker" from "a broker nobody subscribes to".
            handshake = HandshakeMonitor(
                sock, self.address, curve=keys.directory if keys is not None else None
            )
            try:
                sock.connect(self.address)  # any name lookup happens here, on our thread
            except zmq.ZMQError as exc:
                handshake.close()
                sock.close(linger=0)
                self.error = f"cannot connect to {self.address!r}: {exc}"
                return None
            self._socket, self._handshake = sock, handshake
            self._connected_at = time.monotonic()
        return self._socket

    @property
    def handshakes(self) -> int:
        """ZeroMQ handshakes completed with a broker, ever."""
        return self._handshake.handshakes if self._handshake is not None else 0

    @property
    def refused(self) -> str | None:
        """Why the last peer at the address was refused (None: it was not)."""
        return self._handshake.refused if self._handshake is not None else None

    def refusal(self) -> Problem | None:
        """Why CURVE keeps our events from the broker: (drop reason, detail), or None."""
        if self._keys_problem is not None:
            return self._keys_problem
        return self._handshake.problem if self._handshake is not None else None

    def poll_events(self) -> None:
        """Read what the socket monitor reported (the publisher thread calls it each tick)."""
        if self._handshake is not None and not self._closed:
            self._handshake.poll()

    def connected_for(self) -> float:
        """Seconds since the socket was created (0 before the first send)."""
        return time.monotonic() - self._connected_at if self._socket is not None else 0.0

    def in_startup_hold(self) -> bool:
        """Whether we connected so recently that the broker may not have spoken yet."""
        return time.monotonic() - self._connected_at < self.startup_hold

    def holding(self) -> bool:
        """Whether events should wait: connected, no subscription known yet, still early."""
        return not self.subscribed and self.error is None and self.in_startup_hold()

    def read_subscriptions(self, deadline: float) -> None:
        """Apply the broker's (un)subscriptions; while none is known, wait until ``deadline``."""
        sock = self._connect()
        if sock is None:
            return
        try:
            self._poll_subscriptions(sock, deadline)
        finally:
            self.poll_events()

    def _poll_subscriptions(self, sock: zmq.Socket[bytes], deadline: float) -> None:
        while True:
            if self.subscribed or not self.in_startup_hold():
                timeout = 0
            else:
                hold_end = self._connected_at + self.startup_hold
                timeout = int(max(0.0, min(deadline, hold_end) - time.monotonic()) * 1000)
            if not sock.poll(timeout, zmq.POLLIN):
                return
            first = not self.subscribed
            while True:
                try:
                    message = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._apply_subscription(message)
            if first and self.subscribed:
                # The broker sends its subscriptions one message each: give the rest of
                # them a moment, or a level right behind the first would be filtered.
                sock.poll(10, zmq.POLLIN)

    def _apply_subscription(self, message: bytes) -> None:
        if not message or message[0] not in (0, 1):
            return
        prefix = message[1:].decode("ascii", "replace")
        matched = [level for level in levels.LEVELS if level.startswith(prefix)]
        if message[0] == 1:
            self.subscribed.update(matched)
            self.ever_subscribed.update(matched)
        else:
            self.subscribed.difference_update(matched)

    def send(self, frames: list[bytes], events: int, deadline: float) -> bool:
        """Send a batch of ``events`` without blocking; retry until ``deadline`` while full.

        The batch counts in :attr:`queued_events` until ZeroMQ has let go of it.
        """
        sock = self._socket
        if sock is None:
            return False
        while True:
            try:
                self._send_tracked(sock, frames, events)
                return True
            except zmq.Again:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)

    def _send_tracked(self, sock: zmq.Socket[bytes], frames: list[bytes], events: int) -> None:
        topic, payload = frames
        sock.send(topic, flags=zmq.NOBLOCK | zmq.SNDMORE)
        # The first frame decided: the second is accepted (one message, one HWM check).
        try:
            tracker = sock.send(payload, flags=zmq.NOBLOCK, copy=False, track=True)
        except RuntimeError:  # pyzmq's tracking thread is shutting down (very late at exit)
            sock.send(payload, flags=zmq.NOBLOCK)
            self._untracked_events += events
            return
        with self._in_flight_lock:
            self._in_flight.append((tracker, events))

    @property
    def queued_events(self) -> int:
        """Events handed to ZeroMQ that it has not written to a connection yet (or may not have)."""
        with self._in_flight_lock:
            in_flight = self._in_flight
            while in_flight and in_flight[0][0].done:
                in_flight.popleft()
            return sum(count for _, count in in_flight) + self._untracked_events

    def wait_written(self, deadline: float) -> None:
        """Wait until ZeroMQ has let go of every tracked batch, or until ``deadline``."""
        with self._in_flight_lock:
            last = self._in_flight[-1][0] if self._in_flight else None
        if last is not None:
            while not last.done and time.monotonic() < deadline:
                with contextlib.suppress(zmq.NotDone):
                    last.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def close(self, linger: float) -> int:
        """Close the socket after at most ``linger`` s; return the events it still held.

        The events returned were handed to ZeroMQ but not written to a connection when
        the linger ran out, so ZeroMQ threw them away. A closed link never connects again.
        """
        self._closed = True
        undelivered = 0
        sock = self._socket
        if sock is not None:
            deadline = time.monotonic() + linger
            tracking = _tracking_alive()
            if tracking:
                self.wait_written(deadline)
                undelivered = self.queued_events
            # Nothing left: the rest of the linger lets the I/O thread finish a write.
            rest = max(0.0, deadline - time.monotonic()) if not undelivered else 0.0
            if self._handshake is not None:
                self._handshake.close()  # what it learnt stays readable
            sock.close(linger=int(rest * 1000))
            self._socket = None
            self._terminate()
            if not tracking and time.monotonic() >= deadline:
                # Trackers cannot complete any more (pyzmq's tracking thread has stopped):
                # the linger ran out, so count as unsent whatever had no completed tracker.
                undelivered = self.queued_events
            with self._in_flight_lock:
                self._in_flight.clear()
                self._untracked_events = 0
        self._terminate()
        return undelivered

    def _terminate(self) -> None:
        if self._context is not None:
            self._context.term()  # returns once the socket has sent or its linger ran out
            self._context = None


def _tracking_alive() -> bool:
    """Whether pyzmq's thread that completes message trackers is (or can be) running."""
    from zmq.utils.garbage import gc

    return gc.is_alive() or not getattr(gc, "_stay_down", False)
