"""The socket monitor's reading of handshakes (``zibrato.security.handshake``), on real sockets.

The clock is injected, so "2 s later" takes no time; the peers are real loopback ones.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from zibrato.security.handshake import REFUSED_RETRY, HandshakeMonitor
from zibrato.security.policy import apply_handshake_policy

TIMEOUT = 10.0


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def poll_until(monitor: HandshakeMonitor, done: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
        monitor.poll()
        time.sleep(0.02)


def test_a_handshake_libzmq_recovers_by_itself_is_not_broken_off_later(
    context: zmq.Context[Any],
) -> None:
    """A peer that hung up before its handshake, then a broker on the same port: the
    working connection stays, although a reconnect was due 2 s after the refusal."""
    clock = Clock()
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    client = context.socket(zmq.XPUB)
    client.setsockopt(zmq.LINGER, 0)
    apply_handshake_policy(client)
    broker = context.socket(zmq.XSUB)
    broker.setsockopt(zmq.LINGER, 0)
    apply_handshake_policy(broker)
    monitor = HandshakeMonitor(
        client, address, curve=None, read_mechanism=lambda address: None, clock=clock
    )
    try:
        client.connect(address)
        listener.settimeout(TIMEOUT)
        accepted, _ = listener.accept()
        accepted.close()  # no greeting: a peer that is stopped, or no ZeroMQ peer
        listener.close()
        poll_until(monitor, lambda: monitor.refused is not None, "refusal")
        broker.bind(address)  # libzmq retries every 100 ms by itself and gets in
        poll_until(monitor, lambda: monitor.handshakes == 1, "handshake")
        assert monitor.connected and monitor.refused is None
        clock.now += 2 * REFUSED_RETRY
        for _ in range(10):
            monitor.poll()
            time.sleep(0.02)
        assert monitor.handshakes == 1, "the working connection was dropped and made again"
        assert monitor.connected
    finally:
        monitor.close()
        client.close(linger=0)
        broker.close(linger=0)


def test_a_refused_peer_is_asked_again_every_few_seconds(context: zmq.Context[Any]) -> None:
    """libzmq gives up on an address after a protocol error; the monitor connects again."""
    clock = Clock()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        client = context.socket(zmq.XPUB)
        client.setsockopt(zmq.LINGER, 0)
        apply_handshake_policy(client)
        monitor = HandshakeMonitor(
            client, address, curve=None, read_mechanism=lambda address: None, clock=clock
        )
        try:
            client.connect(address)
            first, _ = listener.accept()
            first.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # refused: not ZMTP 3
            poll_until(monitor, lambda: monitor.refused is not None, "refusal")
            first.close()
            monitor.poll()  # not yet due: no new connection
            listener.settimeout(0.3)
            with pytest.raises(TimeoutError):
                listener.accept()
            clock.now += REFUSED_RETRY
            monitor.poll()
            listener.settimeout(TIMEOUT)
            again, _ = listener.accept()
            again.close()
        finally:
            monitor.close()
            client.close(linger=0)
