"""The handshake policy every Zibrato ZeroMQ socket shares: whom a socket will talk to.

Every socket (the client's link, the broker's two sides, each subscriber) goes through
:func:`apply_handshake_policy` right after it is created, so its security options (the
ZAP domain, and CURVE keys when it has them) are set in this one place, for both sides.

The policy refuses peers that do not speak ZMTP 3, which is what keeps a non-ZeroMQ peer
from aborting the process. libzmq 4.3.5 takes any peer whose first byte is not ``0xff``
for a ZMTP 1.0 peer (an HTTP server's ``HTTP/1.1 400`` is one). For a PUB or XPUB socket
it then injects a phantom "subscribe to everything" message into the socket's inbound
pipe and asserts that the push succeeded (``src/zmtp_engine.cpp:439``,
``process_routing_id_msg``). The push fails with EAGAIN whenever that pipe is terminating
(the socket is being closed, as at exit) or full (the socket has not read it for a
while), and ``errno_assert`` aborts the process. Before that, the phantom subscription
also made such a peer look like a subscriber to everything, so events sent into it were
counted as sent.

libzmq refuses ZMTP 1.0 and 2.0 peers when ZAP is enabled on the socket
(``session_base_t::zap_enabled``: a non-NULL mechanism or a non-empty ZAP domain). A ZAP
domain alone, with no ZAP handler in the socket's context, changes nothing for ZMTP 3
peers: the NULL mechanism finds no handler and, as ``ZMQ_ZAP_ENFORCE_DOMAIN`` is off,
completes the handshake as before. A broker with CURVE keys has a handler
(:class:`zibrato.security.authenticator.ZapHandler`): the same domain sends every CURVE handshake
to it, and its sockets enforce the domain, so that no handler means no client.
"""

from __future__ import annotations

from typing import Any

import zmq

from zibrato.security.curve import BrokerKeys, ClientKeys

ZAP_DOMAIN = b"zibrato"


def apply_handshake_policy(
    sock: zmq.Socket[Any], keys: ClientKeys | BrokerKeys | None = None
) -> None:
    """Make ``sock`` refuse peers that are not ZMTP 3 ZeroMQ sockets (call before connect/bind).

    With ``keys`` it is a CURVE client (:class:`ClientKeys`: it proves itself and checks
    the broker's key) or a CURVE server (:class:`BrokerKeys`: the ZAP handler vets each
    client's key); a peer with any other mechanism then fails the handshake.
    """
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    if isinstance(keys, ClientKeys):
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys.broker)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    elif isinstance(keys, BrokerKeys):
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        # Without it, a CURVE server whose context has no ZAP handler (not started yet,
        # or its thread gone) accepts every client key: fail closed instead.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
