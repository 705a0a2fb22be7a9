"""The publisher's connection to the broker: an XPUB socket and what it has learnt.

XPUB rather than PUB because it tells us which levels anybody subscribes to: the
publisher drops unsubscribed levels before encoding anything, and holds what was recorded
before the broker has spoken (ZeroMQ's "slow joiner" window) instead of losing it.
One link lives in one process: a forked child makes its own.
"""

from __future__ import annotations

import os
import time

import zmq

from zibrato import levels
from zibrato.curve_sockets import HandshakeWatch, Problem, secure_connect


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
        self.curve = curve  # a CURVE keys directory (zibrato.curve); None: no CURVE
        self.watch: HandshakeWatch | None = None  # says why the broker refuses us, if it does
        self.sndhwm = sndhwm
        self.startup_hold = startup_hold
        self.subscribed: set[str] = set()
        self.ever_subscribed: set[str] = set()
        self.error: str | None = None  # why the address cannot be connected to
        # Our own context: closing terminates it, which is what makes ZeroMQ honour the
        # linger (the process may exit right after; the I/O thread must finish first).
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._connected_at = 0.0
        self._closed = False

    def _connect(self) -> zmq.Socket[bytes] | None:
        """Return the connected socket; None when the address cannot be connected to."""
        if self._socket is None and self.error is None and not self._closed:
            if self._context is None:
                self._context = zmq.Context(io_threads=1)
            sock = self._context.socket(zmq.XPUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue raises Again: we count it
            try:
                # any name lookup happens here, on our thread
                self.watch = secure_connect(sock, self.address, curve=self.curve)
            except zmq.ZMQError as exc:
                sock.close(linger=0)
                self.error = f"cannot connect to {self.address!r}: {exc}"
                return None
            self._socket = sock
            self._connected_at = time.monotonic()
        return self._socket

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

    def refusal(self) -> Problem | None:
        """Why the broker does not take our events: (drop reason, detail), or None."""
        return self.watch.refusal() if self.watch is not None else None

    def send(self, frames: list[bytes], deadline: float) -> bool:
        """Send without blocking; while ZeroMQ's queue is full, retry until ``deadline``."""
        sock = self._socket
        if sock is None:
            return False
        while True:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK)
                return True
            except zmq.Again:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)

    def close(self, linger: float) -> None:
        """Close the socket, waiting at most ``linger`` s for what it still has to send.

        A closed link never connects again.
        """
        self._closed = True
        if self.watch is not None:
            self.watch.close()
        if self._socket is not None:
            self._socket.close(linger=int(linger * 1000))
            self._socket = None
        if self._context is not None:
            self._context.term()  # returns once the socket has sent or its linger ran out
            self._context = None
