"""The broker: an XSUB/XPUB forwarder between publishers and subscribers.

Forwarding happens inside libzmq (``zmq_proxy_steerable``), so no message passes through
Python. Subscriptions flow the other way, from subscribers to every publisher, which is
how an unsubscribed level is dropped inside the publishing process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from typing import Any

import zmq

from zibrato import protocol
from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND
from zibrato.errors import AddressInUse, ConfigError
from zibrato.security.authenticator import ZapHandler
from zibrato.security.curve import BrokerKeys, keys_for_broker
from zibrato.security.policy import apply_handshake_policy


class Broker:
    """Forward every batch from the frontend (publishers) to the backend (subscribers).

    >>> broker = Broker("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")   # doctest: +SKIP
    >>> frontend, backend = broker.bind()
    >>> broker.start()          # in a thread; or broker.run() to block
    >>> broker.stop()
    """

    def __init__(
        self,
        frontend: str = DEFAULT_FRONTEND,
        backend: str = DEFAULT_BACKEND,
        *,
        context: zmq.Context[Any] | None = None,
        max_message_bytes: int = protocol.MAX_MESSAGE_BYTES + 4096,
        hwm: int = 10_000,
        curve: BrokerKeys | str | os.PathLike[str] | None = None,
        insecure: bool = False,
    ) -> None:
        self.frontend_address = frontend
        # CURVE keys (zibrato.security.curve); without them only loopback, unless ``insecure``.
        self.curve = curve
        self.insecure = insecure
        self._zap: ZapHandler | None = None
        self.backend_address = backend
        self.max_message_bytes = max_message_bytes
        self.hwm = hwm
        # Our own context unless given one: terminating it is what guarantees the ports
        # are released when we stop (socket close is asynchronous in libzmq).
        self._owns_context = context is None
        self._context: zmq.Context[Any] | None = context  # created at bind() when ours
        self._thread: threading.Thread | None = None
        self._control_address = f"inproc://zibrato-broker-{id(self):x}"
        self._sockets: list[zmq.Socket[Any]] = []
        self.failure: str | None = None  # why forwarding stopped, if not by stop()

    def bind(self) -> tuple[str, str]:
        """Bind both sides; return the addresses actually bound (port 0 resolved)."""
        try:
            keys = keys_for_broker(
                (self.frontend_address, self.backend_address),
                curve=self.curve,
                insecure=self.insecure,
            )
            xsub = self._socket(zmq.XSUB)
            xsub.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            xsub.setsockopt(zmq.RCVHWM, self.hwm)
            apply_handshake_policy(xsub, keys)
            xpub = self._socket(zmq.XPUB)
            xpub.setsockopt(zmq.SNDHWM, self.hwm)
            apply_handshake_policy(xpub, keys)
            if keys is not None:  # before any bind: no client may arrive unvetted
                self._zap = ZapHandler(xsub.context, keys)
            self.frontend_address = _bind(xsub, self.frontend_address)
            self.backend_address = _bind(xpub, self.backend_address)
            control = self._socket(zmq.PAIR)
            control.bind(self._control_address)
        except BaseException:
            self._release()  # a retry on the same addresses must succeed
            raise
        return self.frontend_address, self.backend_address

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        if self._context is None:
            self._context = zmq.Context()
        sock: zmq.Socket[Any] = self._context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self._sockets.append(sock)
        return sock

    def run(self) -> None:
        """Forward until :meth:`stop` is called (from another thread)."""
        if not self._sockets:
            self.bind()
        xsub, xpub, control = self._sockets
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        except BaseException as exc:
            self.failure = f"forwarding stopped: {type(exc).__name__}: {exc}"
            raise
        finally:
            for sock in self._sockets:
                sock.close(linger=0)
            self._sockets = []

    def _release(self) -> None:
        """Close every socket and, when the context is ours, wait until they are gone."""
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets = []
        if self._zap is not None:
            self._zap.stop()
            self._zap = None
        if self._owns_context and self._context is not None:
            self._context.term()  # returns once every socket, listeners included, is gone
            self._context = None

    def start(self) -> tuple[str, str]:
        """Bind, then forward on a daemon thread; return the bound addresses."""
        addresses = self.bind()
        self._thread = threading.Thread(target=self.run, name="zibrato-broker", daemon=True)
        self._thread.start()
        return addresses

    def stop(self, timeout: float = 2.0) -> None:
        """Stop forwarding and close the sockets (within ``timeout`` seconds)."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        assert self._context is not None
        stopper = self._context.socket(zmq.PAIR)
        stopper.setsockopt(zmq.LINGER, 0)
        try:
            stopper.connect(self._control_address)
            # A TERMINATE sent while the proxy is still attaching the control pipe can be
            # lost, so repeat it until the proxy thread has ended.
            while thread.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(zmq.Again):
                    stopper.send(b"TERMINATE", zmq.NOBLOCK)
                thread.join(min(0.05, max(0.0, deadline - time.monotonic())))
        finally:
            stopper.close()
        self._thread = None
        if not thread.is_alive():
            self._release()


def _bind(sock: zmq.Socket[Any], address: str) -> str:
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(
                f"{address} is already in use (is another zibrato broker running?)"
            ) from None
        raise ConfigError(f"cannot bind {address}: {exc}") from None
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)
