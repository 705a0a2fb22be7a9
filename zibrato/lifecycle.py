"""A process's clients across fork and exit, and the hook for pool tasks.

Every :class:`~zibrato.publisher.Publisher` registers here when it is created. Then:

* at interpreter exit (``atexit``), every client is closed, each within its linger;
* in a forked child, every client gets a fresh identity, socket and thread;
* in a ``multiprocessing`` child (which leaves through ``os._exit()``, skipping atexit),
  a multiprocessing finalizer closes the clients when the child ends normally.

A child killed by a signal runs none of this. ``Pool.terminate()`` (which
``with Pool() as pool:`` calls on leaving the block) kills its workers with SIGTERM, so
a worker's events that its client had not sent yet are lost, and nothing can count them.
:func:`flushed` wraps a task so that its events are sent before its result goes back.
(A SIGTERM handler in the workers is no answer: with a Python signal handler installed,
a worker blocked waiting for its next task can miss the signal, and ``terminate()`` then
waits for it forever.)
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("zibrato")

R = TypeVar("R")


class Closable(Protocol):
    """What this module needs of a client's publisher."""

    linger: float

    def close(self, linger: float | None = None) -> None: ...

    def after_fork_in_child(self) -> None: ...

    def send_now(self, timeout: float) -> None: ...


live: weakref.WeakSet[Closable] = weakref.WeakSet()
_hooks_installed = False


def track(publisher: Closable) -> None:
    """Close ``publisher`` at exit (and in multiprocessing children); renew it after fork."""
    _install_process_hooks()
    import multiprocessing.util as mp_util

    # multiprocessing children clear the finalizers they inherit; this after-fork hook of
    # theirs registers a fresh one in each child.
    mp_util.register_after_fork(publisher, _finalize_in_child)
    live.add(publisher)


def forget(publisher: Closable) -> None:
    """Stop tracking a closed publisher."""
    live.discard(publisher)


def close_all() -> None:
    """Close every live client of this process (each waits at most its linger)."""
    for publisher in list(live):
        try:
            publisher.close()
        except Exception:
            log.debug("zibrato: error while closing a publisher", exc_info=True)


def send_all(timeout: float | None = None) -> None:
    """Send what every client of this process recorded; wait until ZeroMQ wrote it.

    Each client waits at most ``timeout`` seconds (default: its linger).
    """
    for publisher in list(live):
        publisher.send_now(publisher.linger if timeout is None else timeout)


class flushed(Generic[R]):  # lower case: it is used like a function, flushed(task)
    """Wrap ``task`` so that the events it records are sent before it returns.

    For ``multiprocessing.Pool`` tasks, whose workers ``Pool.terminate()`` kills::

        with Pool() as pool:
            pool.map(zibrato.flushed(work), items)

    The wrapper pickles as long as ``task`` does. Each call waits, after ``task``, until
    ZeroMQ has written its events (at most the client's linger, 0.25 s by default; the
    connection is closed to learn it, and opened again by the next task's events).
    """

    def __init__(self, task: Callable[..., R]) -> None:
        self.task = task

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        try:
            return self.task(*args, **kwargs)
        finally:
            send_all()

    def __repr__(self) -> str:
        return f"zibrato.flushed({self.task!r})"


def _install_process_hooks() -> None:
    global _hooks_installed
    if not _hooks_installed:
        _hooks_installed = True
        atexit.register(close_all)
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    for publisher in list(live):
        publisher.after_fork_in_child()


def _finalize_in_child(publisher: Closable) -> None:
    import multiprocessing.util as mp_util

    mp_util.Finalize(publisher, publisher.close, exitpriority=-100)
