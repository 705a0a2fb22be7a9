"""CURVE on ZeroMQ sockets: clients that say why a broker refuses them, the broker's ZAP handler.

A client socket (the publisher's link, every subscriber) is connected through
:func:`secure_connect`, which applies the keys and returns a :class:`HandshakeWatch`:
ZeroMQ itself never tells the application that a broker refused it, so the watch reads
the socket's monitor events and turns them into a drop reason and one clear sentence
(and connects again now and then, since libzmq gives up after a refusal).

A broker's sockets go through :func:`secure_bind`: CURVE servers whose every handshake is
put to a :class:`ZapHandler` (ZeroMQ's authentication protocol, RFC 27) that accepts only
the public keys in ``DIR/authorized``. NULL-mechanism peers fail the handshake before
any of that (a mechanism mismatch), so they never get through either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from zibrato.curve import (
    CURVE_ENV,
    BrokerKeys,
    ClientKeys,
    broker_keys,
    check_exposure,
    client_keys,
)
from zibrato.errors import ConfigError
from zibrato.security import ZAP_DOMAIN

log = logging.getLogger("zibrato")

# Drop reasons, as counted in zibrato.publisher.dropped{reason}.
REFUSED = "curve_refused"  # the broker turned our handshake down (key, mechanism)
KEYS_UNUSABLE = "curve_keys"  # our own keys cannot be loaded: nothing is connected
HANDSHAKE_FAILED = "handshake_failed"  # the peer broke the handshake for another reason

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by ZeroMQ's RFC 27
RETRY_REFUSED_SECONDS = 2.0  # libzmq does not reconnect after a refusal: we do, this often
_WATCHED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MAX_LOGGED_PEERS = 100

Problem = tuple[str, str]  # (drop reason, the sentence that says why and what to do)


def explain_refusal(
    event: int, value: int, *, address: str, curve: str | None, known: Problem | None = None
) -> Problem | None:
    """Turn a socket monitor's handshake failure into (drop reason, what to do); else None.

    ``curve`` is the client's keys directory (None: NULL mechanism); ``known`` is the
    explanation so far, which a vaguer event does not replace.
    """
    where = f"the broker at {address}"
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return (
            REFUSED,
            f"{where} refused this client's CURVE key (status {value}): copy "
            f"{curve}/client.key into the broker's authorized/ folder and restart it",
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value != zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return (
                HANDSHAKE_FAILED,
                f"the peer at {address} broke the ZeroMQ handshake (protocol error "
                f"{value:#x}): is it a zibrato broker?",
            )
        if curve is None:
            return (
                REFUSED,
                f"the peer at {address} requires a security mechanism this client does not "
                f"use: if it is a broker with CURVE, give this client its keys (curve=DIR, "
                f"--curve DIR or {CURVE_ENV}=DIR; see `zibrato keys`)",
            )
        return (
            REFUSED,
            f"{where} does not use CURVE: start it with --curve DIR, or stop giving this "
            "client keys",
        )
    if event != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return None
    if known is not None and known[0] == REFUSED:
        return known  # a closed connection adds nothing to a clearer reason
    if curve is not None:
        return (
            REFUSED,
            f"{where} did not complete the CURVE handshake: is {curve}/broker.key the "
            "public key of that broker?",
        )
    # What a NULL client sees when a CURVE broker hangs up before saying why.
    return (
        REFUSED,
        f"{where} closed the handshake: if it requires CURVE, give this client its keys "
        f"(curve=DIR, --curve DIR or {CURVE_ENV}=DIR; see `zibrato keys`)",
    )


class HandshakeWatch:
    """Why the broker at ``address`` does not take this socket, if it does not.

    >>> watch = secure_connect(sock, "tcp://10.0.0.5:5550", curve="/etc/zibrato")  # doctest: +SKIP
    >>> watch.refusal()        # None, or ("curve_refused", "the broker at ... refused ...")

    Use it from the thread that uses the socket; :meth:`close` before closing the socket.
    """

    def __init__(
        self,
        sock: zmq.Socket[Any] | None,
        address: str,
        *,
        curve: str | None,
        problem: Problem | None = None,
        warn: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.curve = curve  # the keys directory in use; None: NULL mechanism
        self.warn = warn
        self._clock = clock
        self._sock = sock
        self._monitor = sock.get_monitor_socket(_WATCHED) if sock is not None else None
        self._problem = problem
        self._failed_at = clock()
        self._warned = False
        if problem is not None:
            self._say(problem)

    @classmethod
    def unusable(cls, address: str, detail: str, *, warn: bool = False) -> HandshakeWatch:
        """A watch for a socket that was never connected because our keys cannot be used."""
        return cls(None, address, curve=None, problem=(KEYS_UNUSABLE, detail), warn=warn)

    def refusal(self) -> Problem | None:
        """Return why the broker does not take us: (drop reason, sentence); None if it does."""
        monitor = self._monitor
        if monitor is None:
            return self._problem
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:  # the context is going away: nothing more to learn
                return self._problem
            self._learn(frames)
        if self._problem is not None and self._clock() - self._failed_at >= RETRY_REFUSED_SECONDS:
            self._retry()
        return self._problem

    def _learn(self, frames: list[bytes]) -> None:
        try:
            message = parse_monitor_message(frames)
        except Exception:  # a monitor frame we do not understand is no news
            return
        event, value = int(message["event"]), int(message["value"])
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._problem = None
            return
        problem = explain_refusal(
            event, value, address=self.address, curve=self.curve, known=self._problem
        )
        if problem is not None:
            if self._problem is None:
                self._failed_at = self._clock()
            self._problem = problem
            self._say(problem)

    def _say(self, problem: Problem) -> None:
        if self.warn and not self._warned:
            self._warned = True
            log.warning("zibrato: %s (logged once)", problem[1])

    def _retry(self) -> None:
        # libzmq drops an endpoint after an authentication or mechanism failure; asking
        # again now and then lets a client in once the broker's keys are fixed.
        sock = self._sock
        if sock is None:
            return
        self._failed_at = self._clock()
        with contextlib.suppress(zmq.ZMQError):
            sock.disconnect(self.address)  # gone already after a refusal; else no duplicate
        with contextlib.suppress(zmq.ZMQError):
            sock.connect(self.address)

    def close(self) -> None:
        """Stop watching (before the socket closes; the monitor socket must go first)."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            if self._sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._sock.disable_monitor()
            monitor.close(linger=0)


def apply_client_keys(sock: zmq.Socket[Any], keys: ClientKeys) -> None:
    """Make ``sock`` a CURVE client with ``keys`` (before it connects)."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.broker)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)


def apply_server_keys(sock: zmq.Socket[Any], keys: BrokerKeys) -> None:
    """Make ``sock`` a CURVE server with ``keys`` whose clients the ZAP handler vets."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)


def secure_connect(
    sock: zmq.Socket[Any],
    address: str,
    *,
    curve: ClientKeys | str | os.PathLike[str] | None,
    warn: bool = False,
) -> HandshakeWatch:
    """Connect ``sock`` to ``address``, with CURVE keys from ``curve`` unless it is None.

    Never raises for unusable keys: the socket then stays unconnected (so nothing goes out
    unencrypted) and the watch reports ``curve_keys``. ``warn`` logs the first refusal;
    leave it off where the caller logs (the publisher logs its drops).
    """
    directory: str | None = None
    if curve is not None:
        try:
            loaded = client_keys(curve)
        except ConfigError as exc:
            return HandshakeWatch.unusable(address, f"cannot use CURVE keys: {exc}", warn=warn)
        apply_client_keys(sock, loaded)
        directory = loaded.directory
    watch = HandshakeWatch(sock, address, curve=directory, warn=warn)
    try:
        sock.connect(address)
    except zmq.ZMQError:
        watch.close()
        raise
    return watch


# -- the broker's side -----------------------------------------------------------------------
class ZapHandler:
    """Answer libzmq's authentication requests: accept the CURVE keys in ``authorized``.

    >>> handler = ZapHandler(context, broker_keys("/etc/zibrato/keys"))   # doctest: +SKIP
    >>> handler.stop()

    Runs on its own thread and binds ZeroMQ's fixed ZAP address in ``context``, so sockets
    of that context with CURVE_SERVER set consult it once per connection.
    """

    def __init__(self, context: zmq.Context[Any], broker: BrokerKeys) -> None:
        self.authorized = broker.authorized
        self.authorized_dir = broker.authorized_dir
        self.accepted = 0
        self.refused = 0
        self._logged: set[bytes] = set()
        self._stopping = threading.Event()
        self._socket: zmq.Socket[Any] = context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            raise ConfigError(f"cannot start the CURVE authenticator: {exc}") from None
        self._thread = threading.Thread(target=self._serve, name="zibrato-zap", daemon=True)
        self._thread.start()

    def reply(self, request: Sequence[bytes]) -> list[bytes]:
        """Return the ZAP reply to ``request`` (RFC 27): 200 for an authorized key, else 400."""
        if len(request) < 6 or request[0] != b"1.0":
            request_id = request[1] if len(request) > 1 else b""
            return [b"1.0", request_id, b"500", b"malformed ZAP request", b"", b""]
        request_id, peer, mechanism, credentials = request[1], request[3], request[5], request[6:]
        if mechanism == b"CURVE" and len(credentials) == 1 and credentials[0] in self.authorized:
            self.accepted += 1
            return [b"1.0", request_id, b"200", b"OK", z85.encode(credentials[0]), b""]
        self.refused += 1
        self._log_refusal(peer, mechanism, credentials)
        return [b"1.0", request_id, b"400", b"key not authorized", b"", b""]

    def _log_refusal(self, peer: bytes, mechanism: bytes, credentials: Sequence[bytes]) -> None:
        # Once per peer address (and at most for a hundred of them): a client that keeps
        # retrying, or a scan with many keys, must not flood the log.
        if peer in self._logged or len(self._logged) >= _MAX_LOGGED_PEERS:
            return
        self._logged.add(peer)
        key = credentials[0] if len(credentials) == 1 and len(credentials[0]) == 32 else None
        who = f"key {z85.encode(key).decode()}" if key is not None else "credentials"
        log.warning(
            "zibrato: refused a %s client from %s: its %s is not in %s (further refusals "
            "from there are not logged)",
            mechanism.decode("ascii", "replace")[:20],
            peer.decode("ascii", "replace")[:64],
            who,
            self.authorized_dir,
        )

    def _serve(self) -> None:
        sock = self._socket
        try:
            while not self._stopping.is_set():
                if not sock.poll(100, zmq.POLLIN):
                    continue
                request = sock.recv_multipart(zmq.NOBLOCK)
                try:
                    answer = self.reply(request)
                except Exception:  # a REP socket must answer every request
                    log.exception("zibrato: the CURVE authenticator failed on a request")
                    answer = [b"1.0", b"", b"500", b"internal error", b"", b""]
                sock.send_multipart(answer)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError:
            log.exception("zibrato: the CURVE authenticator stopped")
        finally:
            sock.close(linger=0)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop answering (the sockets it protected must be closed first or next)."""
        self._stopping.set()
        self._thread.join(timeout)


def secure_bind(
    context: zmq.Context[Any],
    sockets: Sequence[zmq.Socket[Any]],
    *,
    addresses: Sequence[str],
    curve: BrokerKeys | str | os.PathLike[str] | None,
    insecure: bool = False,
) -> ZapHandler | None:
    """Make a broker's ``sockets`` CURVE servers that accept only authorized clients.

    Call before binding ``addresses``. Without ``curve``, an address beyond loopback is
    refused (ConfigError) unless ``insecure``, which logs a warning instead.
    """
    warning = check_exposure(addresses, curve=curve is not None, insecure=insecure)
    if warning is not None:
        log.warning("zibrato: %s", warning)
    if curve is None:
        return None
    loaded = broker_keys(curve)
    handler = ZapHandler(context, loaded)
    for sock in sockets:
        apply_server_keys(sock, loaded)
    return handler
