"""The broker's authenticator: a ZAP handler that lets in only the authorized CURVE keys.

A broker started with keys makes both of its sockets CURVE servers
(:func:`zibrato.security.policy.apply_handshake_policy`); libzmq then asks the ZAP handler of
the sockets' context about every client that completes the CURVE hello (ZeroMQ's
authentication protocol, RFC 27). :class:`ZapHandler` answers from the public keys in
``DIR/authorized``. NULL-mechanism peers fail the handshake before any of that (a
mechanism mismatch), so they never get through either. pyzmq's ``ThreadAuthenticator``
would do the same; ours is a few lines, logs each refused peer once, and answers every
request, however malformed, with a well-formed reply.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import zmq
from zmq.utils import z85

from zibrato.errors import ConfigError
from zibrato.security.curve import BrokerKeys

log = logging.getLogger("zibrato")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by ZeroMQ's RFC 27
_MAX_LOGGED_PEERS = 100


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
