"""The process's publishers: one per process for every app, however many apps and tests.

A publisher is one ZeroMQ socket and one thread. Every Flask app (and every ``Zibrato``
extension object) whose ``ZIBRATO_PUBLISH``, ``ZIBRATO_SOURCE``, ``ZIBRATO_TAGS`` and
``ZIBRATO_CURVE`` agree shares one, created when the first metric is recorded, so an app
factory called once per test costs no socket and no thread per app. Apps that differ in
those settings get one publisher per distinct combination; ``ZIBRATO_LEVEL`` only
changes the thin client on top (a threshold, no socket). Publishers are fork-safe: a
forked worker gets its own socket.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from typing import Any, Protocol

from zibrato.client import Zibrato
from zibrato.framework.settings import CLIENT, Settings
from zibrato.levels import DEFAULT_THRESHOLD
from zibrato.publisher import Publisher
from zibrato_flask.settings import BROKER_HINT, spell

log = logging.getLogger("zibrato.flask")

_lock = threading.Lock()
_publishers: dict[tuple[Any, ...], Publisher] = {}
_clients: dict[tuple[Any, ...], Zibrato] = {}
_fork_hook_installed = False


class ClientHolder(Protocol):
    """Something that keeps a client and must let go of it when it is closed."""

    def forget_client(self) -> None: ...


# Told when close_all() closes the clients (weakly: an app's state goes with its app).
_holders: weakref.WeakSet[ClientHolder] = weakref.WeakSet()


def client_for(settings: Settings) -> Zibrato:
    """Return the process's client for ``settings`` (creating its publisher on first use)."""
    keywords = settings.client_keywords(broker_hint=BROKER_HINT)
    level = keywords.pop("level", None)
    publisher_key = tuple(sorted((k, repr(v)) for k, v in keywords.items()))
    key = (publisher_key, level)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            _install_fork_hook()
            why_off = settings.off_because(CLIENT)
            if why_off is not None:
                _log_once(why_off.line(spell))
            publisher = _publishers.get(publisher_key)
            if publisher is None:
                publisher = _publishers[publisher_key] = _publisher(keywords)
            client = _clients[key] = Zibrato(publisher=publisher, level=level or DEFAULT_THRESHOLD)
        return client


def _publisher(keywords: dict[str, Any]) -> Publisher:
    address = keywords.pop("publish")
    return Publisher(address, **keywords)


@functools.cache
def _log_once(line: str) -> None:
    log.error("%s; the client is off", line)


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
