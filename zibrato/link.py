"""The publisher's connection to the broker: an XPUB socket and what it has learnt.

XPUB rather than PUB because it tells us which levels anybody subscribes to: the
publisher drops unsubscribed levels before encoding anything, and holds what was recorded
before the broker has spoken (ZeroMQ's "slow joiner" window) instead of losing it.
One link lives in one process and is used by one thread at a time (the publisher's):
a forked child makes its own.

What reached the broker, without tracking every message. Batches are sent copied
(pyzmq's zero-copy tracking costs 25-55 µs of CPU per send and depends on a helper thread
of pyzmq's whose lock a fork can leave held). What ZeroMQ still holds is learnt only when
the link closes: closing the socket with a linger and terminating the link's own context
returns as soon as ZeroMQ has written everything to the connection, or when the linger
runs out. Returning early means nothing was left behind: exact. Running out means some
of the last batches may be lost; ZeroMQ does not say which, but it cannot hold more than
the socket's high-water mark of batches in its queue plus one write buffer, so the events
of that many last batches are an upper bound (:data:`HELD_BEYOND_HWM`), and
:meth:`BrokerLink.close` returns it to be counted as lost. Some of them may still arrive
(a frozen broker that resumes reads what the kernel buffered); the final empty batch the
publisher sends on each level lets the backends count the exact loss when it does.
"""

from __future__ import annotations

import os
import time
from collections import deque

import zmq

from zibrato import levels
from zibrato.errors import ConfigError
from zibrato.security.curve import client_keys
from zibrato.security.handshake import CURVE_KEYS, HandshakeMonitor, Problem
from zibrato.security.policy import apply_handshake_policy

# Besides the queue (at most SNDHWM batches), libzmq's encoder holds one write buffer of
# 8 KB: at most this many more batches (the smallest batch message is some 40 bytes),
# and one more being written when the linger runs out.
HELD_BEYOND_HWM = 8192 // 40 + 1
# When the link's context terminates later than this before the deadline, the linger may
# have run out: the close counts its upper bound of what was left behind.
_LINGER_MARGIN = 0.005


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
        sndhwm: int = 100,
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
        # Our own context: terminating it is what makes ZeroMQ honour the linger (the
        # process may exit right after; the I/O thread must finish first), and how long
        # that takes tells whether everything was written.
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        # The socket's one monitor: handshakes, refusals, reconnecting after a refusal.
        self._handshake: HandshakeMonitor | None = None
        self._connected_at = 0.0
        self._closed = False
        # The events of the last batches sent: all that ZeroMQ may still hold.
        self._recent: deque[int] = deque(maxlen=sndhwm + HELD_BEYOND_HWM)

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

    def hold_ends(self) -> float:
        """When the startup hold ends (on the monotonic clock)."""
        return self._connected_at + self.startup_hold

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

    def send(self, frames: list[bytes], events: int) -> bool:
        """Send a batch of ``events`` without blocking; False when ZeroMQ's queue is full."""
        sock = self._socket
        if sock is None:
            return False
        try:
            # The first frame decides: the second is accepted (one message, one HWM check).
            sock.send(frames[0], zmq.NOBLOCK | zmq.SNDMORE)
        except zmq.Again:
            return False
        sock.send(frames[1], zmq.NOBLOCK)
        self._recent.append(events)
        return True

    def close(self, linger: float) -> int:
        """Close the socket after at most ``linger`` s; return the events it may have lost.

        0 when ZeroMQ wrote everything to the connection in time (exact); otherwise the
        events of the last batches that ZeroMQ may still have held when the linger ran
        out, an upper bound (the module's docstring says why). A closed link never
        connects again.
        """
        self._closed = True
        sock = self._socket
        self._socket = None
        if sock is None:
            self._terminate()
            return 0
        deadline = time.monotonic() + linger
        if self._handshake is not None:
            self._handshake.close()  # what it learnt stays readable
        sock.close(linger=int(linger * 1000))
        self._terminate()  # returns once the socket has written everything or lingered
        if time.monotonic() < deadline - _LINGER_MARGIN:
            return 0
        return sum(self._recent)

    def _terminate(self) -> None:
        if self._context is not None:
            self._context.term()
            self._context = None
