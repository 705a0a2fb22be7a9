"""Receive batches from the broker: subscribe by level, decode, and count losses.

Every consumer (``zibrato tail``, every backend) reads through :class:`Subscriber`, so
malformed messages and lost events are counted the same way everywhere.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import zmq

from zibrato import levels, protocol
from zibrato.addresses import DEFAULT_BACKEND
from zibrato.protocol import Batch, DecodeError
from zibrato.security.curve import ClientKeys, client_keys
from zibrato.security.handshake import HandshakeMonitor
from zibrato.security.policy import apply_handshake_policy

log = logging.getLogger("zibrato")


class LossTracker:
    """Count events (and batches) lost between each publisher and us.

    Every batch says how many events its publisher sent on its level before it
    (``sent_before``) and its sequence number (``seq``); a jump in either is exactly what
    we missed. The first batch seen from a publisher only sets the baseline.
    """

    def __init__(self, max_publishers: int = 10_000) -> None:
        self.max_publishers = max_publishers
        self.lost_events = 0
        self.lost_batches = 0
        self.gaps = 0
        self._expected: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()

    def observe(self, batch: Batch) -> int:
        """Account for ``batch``; return how many events went missing just before it."""
        key = (batch.publisher, batch.level)
        expected = self._expected.pop(key, None)
        self._expected[key] = (batch.seq + 1, batch.sent_before + batch.count)
        if len(self._expected) > self.max_publishers:
            self._expected.popitem(last=False)  # the publisher heard from least recently
        if not batch.count:
            # A publisher's last batch on this level (it closed): nothing more to expect.
            del self._expected[key]
        if expected is None:
            return 0
        next_seq, next_sent_before = expected
        if batch.seq > next_seq:
            self.lost_batches += batch.seq - next_seq
        if batch.sent_before <= next_sent_before:
            return 0
        missed = batch.sent_before - next_sent_before
        self.lost_events += missed
        self.gaps += 1
        return missed


class Subscriber:
    """A SUB socket on the broker's backend side that yields decoded batches.

    >>> sub = Subscriber("tcp://127.0.0.1:5551", level="info")   # doctest: +SKIP
    >>> batch = sub.receive(timeout=0.5)      # a Batch, or None on timeout

    ``curve`` (keys, or the directory ``zibrato keys`` wrote) makes it a CURVE client;
    keys that cannot be used raise :class:`~zibrato.errors.ConfigError` saying what to fix.
    If the broker refuses it, that is logged once, and it asks again every few seconds.
    ``expand=False`` keeps each series' value list as it came (see :func:`protocol.decode`).
    """

    def __init__(
        self,
        connect: str = DEFAULT_BACKEND,
        *,
        level: str = levels.DEFAULT_THRESHOLD,
        context: zmq.Context[Any] | None = None,
        rcvhwm: int = 100_000,
        curve: ClientKeys | str | os.PathLike[str] | None = None,
        expand: bool = True,
    ) -> None:
        keys = client_keys(curve) if curve is not None else None
        self.address = connect
        self.expand = expand  # False: batches keep value lists (protocol.decode)
        self.level = levels.normalize(level)
        self.batches = 0
        self.events = 0
        self.bad_messages: dict[str, int] = {}
        self.losses = LossTracker()
        self._warned: set[str] = set()
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[Any] = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self._socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES + 4096)
        apply_handshake_policy(self._socket, keys)
        for name in levels.at_or_above(self.level):
            self._socket.setsockopt(zmq.SUBSCRIBE, levels.topic(name))
        self._handshake = HandshakeMonitor(
            self._socket, connect, curve=keys.directory if keys is not None else None
        )
        self._warned_refusal = False
        self._socket.connect(connect)

    def receive(self, timeout: float) -> Batch | None:
        """Return the next valid batch, or None if none arrives within ``timeout`` s."""
        if not self._socket.poll(int(timeout * 1000), zmq.POLLIN):
            self._check_handshake()
            return None
        return self.receive_ready()

    def _check_handshake(self) -> None:
        """Learn whether the broker refuses us (and ask again); say once why CURVE does."""
        self._handshake.poll()
        problem = self._handshake.problem
        if problem is not None and not self._warned_refusal:
            self._warned_refusal = True
            log.warning("zibrato: receiving nothing: %s (logged once)", problem[1])

    def receive_ready(self) -> Batch | None:
        """Return the next batch without waiting; None if none is ready or it was bad."""
        try:
            frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return None
        try:
            batch = protocol.decode(frames, expand=self.expand)
        except DecodeError as exc:
            self.count_bad(exc.reason, str(exc))
            return None
        self.batches += 1
        self.events += batch.count
        self.losses.observe(batch)
        return batch

    def count_bad(self, reason: str, detail: str, count: int = 1) -> None:
        """Count a bad message (or bad events); log the first of each reason."""
        self.bad_messages[reason] = self.bad_messages.get(reason, 0) + count
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning(
                "zibrato: ignored a bad message (%s); further ones are only counted", detail[:300]
            )

    def close(self) -> None:
        """Close the socket."""
        self._handshake.close()
        self._socket.close(linger=0)
