"""What Celery's per-process signals need: publishing, and a prefork child's exit.

Celery's publish signals carry no app, so one pair of receivers serves every instrumented
app of the process (:data:`instrumented`, kept by :mod:`zibrato.framework.celery`): the
message's ``reply_to`` (the sending app's per-thread id) tells which app sends, and that
app's instrumentation stamps the message (the queue wait's start) and counts it.
``worker_process_shutdown`` is a prefork child's last moment before ``os._exit``, which
runs no atexit: every client of the process sends what it recorded then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from zibrato import lifecycle


class Instrumented(Protocol):
    """What these receivers need of one app's instrumentation (``TaskInstrumentation``)."""

    app: Any

    def stamp(self, headers: dict[str, Any]) -> None: ...

    def count_published(self, name: object) -> None: ...

    def failed(self, what: str, failure: Exception) -> None: ...


# Every instrumentation of this process, in the order made.
instrumented: list[Instrumented] = []


# -- process-wide receivers: publishing (no app in its signals), a prefork child's exit -------
# The instrumentation that stamped the message being published on this thread, for the
# after_task_publish that follows (its signal carries no properties).
_publishing = threading.local()


def _owner(name: object, properties: object) -> Instrumented | None:
    """Return the instrumentation of the app publishing: the one whose per-thread id is
    the message's ``reply_to`` (as ``app.send_task`` sets it), else the one that registers
    ``name`` (a retry keeps its first publisher's ``reply_to``), else -- only for a message
    without ``reply_to`` -- the first one made. A message of an app that is not
    instrumented here, for a task no instrumented app registers, is nobody's."""
    reply_to = properties.get("reply_to") if isinstance(properties, dict) else None
    if reply_to is not None:
        for found in instrumented:
            if found.app.thread_oid == reply_to:
                return found
    for found in instrumented:
        if isinstance(name, str) and name in found.app.tasks:
            return found
    return instrumented[0] if instrumented and reply_to is None else None


def _before_publish(
    sender: object = None, headers: Any = None, properties: Any = None, **_: Any
) -> None:
    _publishing.owner = None
    try:
        owner = _publishing.owner = _owner(sender, properties)
        if owner is not None and isinstance(headers, dict):
            owner.stamp(headers)
    except Exception as failure:
        if instrumented:
            (_publishing.owner or instrumented[0]).failed("task not stamped", failure)


def _after_publish(sender: object = None, **_: Any) -> None:
    owner = getattr(_publishing, "owner", None)
    _publishing.owner = None
    if owner is not None:
        try:
            owner.count_published(sender)
        except Exception as failure:
            owner.failed("publish not counted", failure)


def _child_exits(**_: Any) -> None:
    """``worker_process_shutdown``: a prefork child is about to leave through ``os._exit``
    (no atexit): send what it recorded, waiting at most each client's linger."""
    lifecycle.close_all()


def _process_receivers(signals: Any) -> list[tuple[Any, Callable[..., None]]]:
    return [
        (signals.before_task_publish, _before_publish),
        (signals.after_task_publish, _after_publish),
        (signals.worker_process_shutdown, _child_exits),
    ]


def connect(signals: Any) -> None:
    """Connect the process-wide receivers (once the first app is instrumented)."""
    for signal, receiver in _process_receivers(signals):
        signal.connect(receiver, weak=False, dispatch_uid=f"zibrato.{receiver.__name__}")


def disconnect(signals: Any) -> None:
    """Disconnect them (once the last app is no longer instrumented)."""
    for signal, receiver in _process_receivers(signals):
        signal.disconnect(receiver, dispatch_uid=f"zibrato.{receiver.__name__}")
