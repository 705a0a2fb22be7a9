"""The process's publishers: one per process for every app, however many apps and tests.

A publisher is one ZeroMQ socket and one thread. Every Flask app (and every ``Zibrato``
extension object) whose ``ZIBRATO_PUBLISH``, ``ZIBRATO_SOURCE`` and ``ZIBRATO_TAGS`` agree
shares one, created when the first metric is recorded, so an app factory called once per
test costs no socket and no thread per app. Apps that differ in those settings get one
publisher per distinct combination; ``ZIBRATO_LEVEL`` only changes the thin client on top
(a threshold, no socket). Publishers are fork-safe: a forked worker gets its own socket.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol

from zibrato.client import Zibrato
from zibrato.publisher import Publisher
from zibrato_flask.settings import FlaskSettings

_lock = threading.Lock()
_publishers: dict[tuple[str, str | None, tuple[tuple[str, str], ...]], Publisher] = {}
_clients: dict[tuple[object, str], Zibrato] = {}
_fork_hook_installed = False


class ClientHolder(Protocol):
    """Something that keeps a client and must let go of it when it is closed."""

    def forget_client(self) -> None: ...


# Told when close_all() closes the clients (weakly: an app's state goes with its app).
_holders: weakref.WeakSet[ClientHolder] = weakref.WeakSet()


def client_for(settings: FlaskSettings) -> Zibrato:
    """Return the process's client for ``settings`` (creating its publisher on first use)."""
    key = (settings.publisher_key, settings.level)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            _install_fork_hook()
            publisher = _publishers.get(settings.publisher_key)
            if publisher is None:
                publish, source, tags = settings.publisher_key
                publisher = Publisher(publish, source=source, tags=dict(tags) or None)
                _publishers[settings.publisher_key] = publisher
            client = _clients[key] = Zibrato(level=settings.level, publisher=publisher)
        return client


def publisher_count() -> int:
    """Return how many publishers (sockets and threads) the Flask apps use in this process."""
    return len(_publishers)


def on_close(holder: ClientHolder) -> None:
    """Call ``holder.forget_client()`` whenever :func:`close_all` closes the clients."""
    _holders.add(holder)


def close_all(linger: float | None = None) -> None:
    """Close every publisher (sending what is pending); the next metric makes new ones."""
    with _lock:
        publishers = list(_publishers.values())
        _publishers.clear()
        _clients.clear()
    for holder in list(_holders):
        holder.forget_client()
    for publisher in publishers:
        publisher.close(linger)


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed:
        # A lock held by another thread at fork time would stay held in the child forever.
        os.register_at_fork(after_in_child=_renew_lock)
        _fork_hook_installed = True


def _renew_lock() -> None:
    global _lock
    _lock = threading.Lock()
