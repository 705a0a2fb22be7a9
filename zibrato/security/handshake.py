"""What a connecting socket's handshakes say: its one socket monitor, read by its owner.

ZeroMQ never tells the application that a peer was refused, and libzmq gives up on an
address for good once its peer failed the handshake (it ends the session on a protocol
or authentication error). A :class:`HandshakeMonitor` watches one socket (the publisher's
link, a subscriber) through the socket's only monitor: it counts completed handshakes,
notices peers that never complete one (not ZeroMQ, or stopped), explains the refusals
that CURVE causes with a drop reason and a sentence that says what to do, and connects
again a while after any refusal, so a broker that is fixed or started later is found.

Two refusals libzmq does not explain. A mechanism mismatch does not say which mechanism
the peer asked for: a NULL client meeting a CURVE broker, a CURVE client meeting a NULL
broker and a stranger that only imitates a ZeroMQ greeting all look the same. And when
the peer hangs up first (as a CURVE broker often does to a NULL client, before the
client has read the broker's greeting, or when it cannot read a CURVE hello made with
another broker's key), libzmq only reports a handshake that failed "with no detail",
then tries again. After either, :func:`peer_mechanism` reads the peer's greeting over a
plain connection (ZMTP 3 names the mechanism in its first 32 bytes) to tell them apart,
at most once per :data:`REFUSED_RETRY`.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from zibrato.security.curve import CURVE_ENV
from zibrato.text import printable

# Drop reasons (zibrato.publisher.dropped{reason}) that CURVE explains.
CURVE_REFUSED = "curve_refused"  # the broker turned our handshake down (key, mechanism)
CURVE_KEYS = "curve_keys"  # our own keys cannot be loaded: nothing is connected

# Seconds before connecting again to an address whose peer failed the handshake.
REFUSED_RETRY = 2.0
# How long reading a peer's greeting may take (only after a handshake failure): two round
# trips (connect, greeting) on any sane network. The owner's thread waits that long at
# most, so it stays short of a client's default linger (0.25 s).
GREETING_TIMEOUT = 0.2

_WATCHED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_DISCONNECTED
)
NOT_ZEROMQ = (
    "something accepts connections there but completes no ZeroMQ handshake: it does not "
    "speak ZeroMQ (ZMTP 3), or it is stopped"
)
_HANDSHAKE_FAILED = "the ZeroMQ handshake failed: a broker with other security settings?"
_REFUSALS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: NOT_ZEROMQ,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the broker refused our credentials",
}
# The start of a ZMTP 3.0 greeting (RFC 23: signature and version), without a mechanism:
# what makes a ZeroMQ peer send its whole greeting back. Sent whole, a greeting whose
# mechanism does not match is refused before the peer has written its own.
_GREETING_START = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00"
_GREETING_MECHANISM = slice(12, 32)

Problem = tuple[str, str]  # (drop reason, the sentence that says why and what to do)


class HandshakeMonitor:
    """Watch ``sock``'s handshakes with the peer at ``address`` (create it before connecting).

    >>> handshake = HandshakeMonitor(sock, "tcp://10.0.0.5:5550", curve=None)  # doctest: +SKIP
    >>> sock.connect("tcp://10.0.0.5:5550"); ...; handshake.poll()
    >>> handshake.problem     # None, or ("curve_refused", "the broker at ... requires CURVE ...")

    ``curve`` is the keys directory the socket uses (None: the NULL mechanism). Use it
    from the thread that uses the socket; :meth:`close` before closing the socket. What
    it learnt stays readable after :meth:`close`.
    """

    def __init__(
        self,
        sock: zmq.Socket[Any],
        address: str,
        *,
        curve: str | None,
        read_mechanism: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.curve = curve
        self.handshakes = 0  # ZeroMQ handshakes completed, ever
        self.connected = False  # a handshake completed and its connection is up right now
        self.refused: str | None = None  # why the last peer at the address was refused
        self.problem: Problem | None = None  # when CURVE explains the refusal
        self._sock: zmq.Socket[Any] | None = sock
        self._read_mechanism = read_mechanism or peer_mechanism
        self._clock = clock
        self._awaiting_handshake = False  # a TCP connection is up, its handshake not done
        self._refused_at = 0.0  # when the last peer failed the handshake
        self._mechanism: tuple[float, str | None] | None = None  # (when read, what)
        self._monitor: zmq.Socket[Any] | None = _watch(sock)

    def poll(self) -> None:
        """Apply what the monitor reported; connect again a while after a refusal."""
        self._read_events()
        self._reconnect_if_refused()

    def _read_events(self) -> None:
        monitor = self._monitor
        while monitor is not None:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:  # the context is going away: nothing more to learn
                return
            try:
                message = parse_monitor_message(frames)
            except (RuntimeError, ValueError):
                continue
            self._apply(int(message["event"]), int(message["value"]))

    def _apply(self, event: int, value: int) -> None:
        if event == zmq.EVENT_CONNECTED:
            self._awaiting_handshake = True
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshakes += 1
            self.connected, self._awaiting_handshake = True, False
            self.refused = self.problem = None
            self._refused_at = 0.0  # libzmq got through by itself: no reconnect is due
        elif event == zmq.EVENT_DISCONNECTED:
            if self._awaiting_handshake:  # the peer never completed a handshake
                self.refused = self.refused or NOT_ZEROMQ
                self._refused_at = self._clock()
            self.connected, self._awaiting_handshake = False, False
        else:  # a handshake failure that libzmq names
            self.refused = _REFUSALS.get(event, _HANDSHAKE_FAILED)
            self._refused_at = self._clock()
            mechanism = None
            if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL or (
                event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
            ):
                mechanism = self._peer_mechanism()
            problem = explain_refusal(
                event,
                value,
                address=self.address,
                curve=self.curve,
                known=self.problem,
                mechanism=mechanism,
            )
            if problem is not None:
                self.problem = problem
                self.refused = problem[1]

    def _peer_mechanism(self) -> str | None:
        """Return the mechanism the peer asks for, read again at most every REFUSED_RETRY s."""
        now = self._clock()
        if self._mechanism is None or now - self._mechanism[0] >= REFUSED_RETRY:
            # libzmq retries every 100 ms after some failures: one reading serves them all.
            self._mechanism = (now, self._read_mechanism(self.address))
        return self._mechanism[1]

    def _reconnect_if_refused(self) -> None:
        sock = self._sock
        if sock is None or not self._refused_at:
            return
        if self._clock() - self._refused_at >= REFUSED_RETRY:
            self._refused_at = 0.0
            with contextlib.suppress(zmq.ZMQError):
                sock.disconnect(self.address)  # gone already after a refusal; else no duplicate
            with contextlib.suppress(zmq.ZMQError):
                sock.connect(self.address)

    def close(self) -> None:
        """Stop watching (before the socket closes: the monitor must go first)."""
        sock, self._sock = self._sock, None
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            if sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    sock.disable_monitor()
            monitor.close(linger=0)


def explain_refusal(
    event: int,
    value: int,
    *,
    address: str,
    curve: str | None,
    known: Problem | None = None,
    mechanism: str | None = None,
) -> Problem | None:
    """Turn a handshake failure that CURVE explains into (drop reason, what to do); else None.

    ``curve`` is the client's keys directory (None: NULL mechanism); ``known`` is the
    explanation so far, which a vaguer event does not replace; ``mechanism`` is the one
    the peer asks for (:func:`peer_mechanism`), when it was read.
    """
    where = f"the broker at {printable(address)}"
    curve = printable(curve) if curve is not None else None
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if curve is None:
            return (
                CURVE_REFUSED,
                f"{where} refused this client (status {value}): give it keys the broker "
                "accepts (see `zibrato keys`)",
            )
        return (
            CURVE_REFUSED,
            f"{where} refused this client's CURVE key (status {value}): copy "
            f"{curve}/client.key into the broker's authorized/ folder and restart it",
        )
    mismatch = (
        event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    )
    if not mismatch and event != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return None
    if curve is None and mechanism == "CURVE":
        return (
            CURVE_REFUSED,
            f"{where} requires CURVE: give this client its keys (curve=DIR, --curve DIR "
            f"or {CURVE_ENV}=DIR; see `zibrato keys`)",
        )
    if curve is not None and mechanism == "NULL":
        return (
            CURVE_REFUSED,
            f"{where} does not use CURVE: start it with --curve DIR, or stop giving this "
            "client keys",
        )
    if curve is not None and mechanism == "CURVE" and not mismatch:
        # A CURVE broker hung up on our hello: it could not read it.
        return (
            CURVE_REFUSED,
            f"{where} did not complete the CURVE handshake: is {curve}/broker.key the "
            "public key of that broker?",
        )
    # Not explained by CURVE (a peer that is no broker, or gone): keep what we knew.
    return known if known is not None and known[0] == CURVE_REFUSED else None


def peer_mechanism(address: str, timeout: float = GREETING_TIMEOUT) -> str | None:
    """Return the security mechanism the ZeroMQ peer at ``address`` asks for; None if unknown.

    Sends the start of a greeting over a plain TCP (or IPC) connection, reads the peer's
    greeting back and hangs up before naming a mechanism (so the peer has nothing to
    refuse or log); anything that is not a ZMTP 3 greeting within ``timeout`` s is None.
    """
    deadline = time.monotonic() + timeout
    try:
        with _open(address, timeout) as conn:
            conn.sendall(_GREETING_START)
            greeting = b""
            while len(greeting) < _GREETING_MECHANISM.stop:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(_GREETING_MECHANISM.stop - len(greeting))
                if not chunk:
                    return None
                greeting += chunk
    except (OSError, ValueError):
        return None
    if greeting[0] != 0xFF or not greeting[9] & 1 or greeting[10] < 3:
        return None
    name = greeting[_GREETING_MECHANISM].rstrip(b"\x00")
    return name.decode("ascii") if name.isascii() and name.isalnum() else None


def _open(address: str, timeout: float) -> socket.socket:
    """Return a plain connection to a ZeroMQ ``tcp://`` or ``ipc://`` address."""
    transport, _, rest = address.partition("://")
    if transport == "tcp":
        host, _, port = rest.rpartition(";")[2].rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    if transport == "ipc":
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        try:
            conn.connect("\0" + rest[1:] if rest.startswith("@") else rest)
        except OSError:
            conn.close()
            raise
        return conn
    raise ValueError(f"no plain connection to {address!r}")


def _watch(sock: zmq.Socket[Any]) -> zmq.Socket[Any]:
    """Return a PAIR socket that receives ``sock``'s connection and handshake events."""
    address = f"inproc://zibrato-handshake-{id(sock):x}"
    sock.monitor(address, _WATCHED)
    monitor: zmq.Socket[Any] = sock.context.socket(zmq.PAIR)
    # libzmq's I/O thread blocks on a full monitor queue: never let it be full (and the
    # owner reads it every tick, so it stays short).
    monitor.setsockopt(zmq.RCVHWM, 0)
    monitor.setsockopt(zmq.LINGER, 0)
    monitor.connect(address)
    return monitor
