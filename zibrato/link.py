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
import threading
import time
from collections import deque

import zmq
from zmq.utils.monitor import parse_monitor_message

from zibrato import levels
from zibrato.security import apply_handshake_policy

# Seconds before connecting again to an address whose peer failed the handshake.
REFUSED_RETRY = 2.0
_WATCHED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_DISCONNECTED
)


_NOT_ZEROMQ = (
    "something accepts connections there but completes no ZeroMQ handshake: it does not "
    "speak ZeroMQ (ZMTP 3), or it is stopped"
)
_HANDSHAKE_FAILED = "the ZeroMQ handshake failed: a broker with other security settings?"
_REFUSALS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: _NOT_ZEROMQ,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the broker refused our credentials",
}


class BrokerLink:
    """Connect lazily to ``address``; track subscriptions; send without blocking.

    >>> link = BrokerLink("tcp://127.0.0.1:5550")        # doctest: +SKIP
    >>> link.read_subscriptions(deadline=time.monotonic() + 1)
    >>> "info" in link.subscribed
    True
    """

    def __init__(self, address: str, *, sndhwm: int = 1000, startup_hold: float = 1.0) -> None:
        self.address = address
        self.sndhwm = sndhwm
        self.startup_hold = startup_hold
        self.subscribed: set[str] = set()
        self.ever_subscribed: set[str] = set()
        self.error: str | None = None  # why the address cannot be connected to
        self.handshakes = 0  # ZeroMQ handshakes completed with a broker, ever
        self.connected = False  # a broker connection is up right now
        self.refused: str | None = None  # why the last peer at the address was refused
        # Our own context: closing terminates it, which is what makes ZeroMQ honour the
        # linger (the process may exit right after; the I/O thread must finish first).
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._awaiting_handshake = False  # a TCP connection is up, its handshake not done
        self._refused_at = 0.0  # when the last peer failed the handshake
        self._connected_at = 0.0
        self._closed = False
        # (tracker, events in its batch) in send order; untracked: sent without a tracker.
        self._in_flight: deque[tuple[zmq.MessageTracker, int]] = deque()
        self._in_flight_lock = threading.Lock()  # stats() reads it from any thread
        self._untracked_events = 0

    def _connect(self) -> zmq.Socket[bytes] | None:
        """Return the connected socket; None when the address cannot be connected to."""
        if self._socket is None and self.error is None and not self._closed:
            if self._context is None:
                self._context = zmq.Context(io_threads=1)
            sock = self._context.socket(zmq.XPUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue raises Again: we count it
            sock.copy_threshold = 0  # a tracked send must be zero-copy at any size
            apply_handshake_policy(sock)
            # Handshake events tell "no broker" from "a broker nobody subscribes to".
            self._monitor = _watch(sock)
            try:
                sock.connect(self.address)  # any name lookup happens here, on our thread
            except zmq.ZMQError as exc:
                self._close_monitor(sock)
                sock.close(linger=0)
                self.error = f"cannot connect to {self.address!r}: {exc}"
                return None
            self._socket = sock
            self._connected_at = time.monotonic()
        return self._socket

    def _read_events(self) -> None:
        """Apply the handshake events the socket monitor has reported."""
        monitor = self._monitor
        while monitor is not None:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                event = parse_monitor_message(frames)["event"]
            except (RuntimeError, ValueError):
                continue
            if event == zmq.EVENT_CONNECTED:
                self._awaiting_handshake = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
                self.connected, self._awaiting_handshake = True, False
                self.refused = None
            elif event == zmq.EVENT_DISCONNECTED:
                if self._awaiting_handshake:  # the peer never completed a handshake
                    self.refused = self.refused or _NOT_ZEROMQ
                    self._refused_at = time.monotonic()
                self.connected, self._awaiting_handshake = False, False
            else:  # a handshake failure that libzmq names
                self.refused = _REFUSALS.get(event, _HANDSHAKE_FAILED)
                self._refused_at = time.monotonic()

    def _reconnect_if_refused(self, sock: zmq.Socket[bytes]) -> None:
        """Connect again a while after a peer failed the handshake.

        libzmq gives up on an endpoint for good once its peer failed the handshake (it
        ends the session on a protocol error): a broker started later on that address
        would never be found.
        """
        if self._refused_at and time.monotonic() - self._refused_at >= REFUSED_RETRY:
            self._refused_at = 0.0
            with contextlib.suppress(zmq.ZMQError):
                sock.disconnect(self.address)
            with contextlib.suppress(zmq.ZMQError):
                sock.connect(self.address)

    def poll_events(self) -> None:
        """Read what the socket monitor reported (the publisher thread calls it each tick)."""
        if self._socket is not None:
            self._read_events()
            self._reconnect_if_refused(self._socket)

    def _close_monitor(self, sock: zmq.Socket[bytes]) -> None:
        if self._monitor is not None:
            sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

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
            self._read_events()
            self._reconnect_if_refused(sock)

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
            self._close_monitor(sock)
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


def _watch(sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
    """Return a PAIR socket that receives ``sock``'s connection and handshake events."""
    address = f"inproc://zibrato-link-monitor-{id(sock):x}"
    sock.monitor(address, _WATCHED)
    monitor: zmq.Socket[bytes] = sock.context.socket(zmq.PAIR)
    # libzmq's I/O thread blocks on a full monitor queue: never let it be full (and the
    # publisher thread reads it every tick, so it stays short).
    monitor.setsockopt(zmq.RCVHWM, 0)
    monitor.setsockopt(zmq.LINGER, 0)
    monitor.connect(address)
    return monitor


def _tracking_alive() -> bool:
    """Whether pyzmq's thread that completes message trackers is (or can be) running."""
    from zmq.utils.garbage import gc

    return gc.is_alive() or not getattr(gc, "_stay_down", False)
