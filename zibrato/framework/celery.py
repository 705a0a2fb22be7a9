"""Celery tasks measured like requests, from every worker process: :func:`instrument`.

``instrument(app)`` connects to Celery's signals, filtered to ``app``, in whichever process
calls it (a web process that publishes tasks, a worker, beat). A task that runs is a unit
of work like a request (:mod:`zibrato.framework.units`): ``task_prerun`` puts a
:class:`TaskState` in the same context variable the database hooks count into, and
``task_postrun`` records the task's events all at once, on the thread that ran it:

* ``celery.task.duration`` and ``celery.task.outcomes`` tagged ``celery.task.name`` and
  ``celery.task.outcome`` (``error.type`` on failure);
* ``celery.task.queue.duration``: from the time the publishing side stamped in the
  message's headers (:data:`DUE_HEADER`: the publish time, or the ETA when later; a
  retry's republish stamps again) to the start, never negative; a message without a
  usable stamp counts ``celery.task.queue.unmeasured{reason}`` instead;
* ``db.client.task.*``, from the same code as ``db.client.request.*``;
* ``celery.task.published`` for each task it sent;
* ``celery.task.breakdown``: where the task's time went (``db``, ``http.client``,
  ``cache``, ``template``, and ``app`` the rest), from the same code as a request's, and
  ``http.client.request.duration`` for each outgoing call, tagged with the task's name.

Outcomes of tasks that never ran, or whose process died with them, come from the worker's
main process: ``revoked`` (and expired), ``unknown`` (messages of no registered task,
under ``celery.task.name="_OTHER"``), and ``failure`` with ``error.type``
``WorkerLostError`` or ``TimeLimitExceeded`` (a hard time limit). A prefork child sends
what it recorded before it leaves through ``os._exit`` (``worker_process_shutdown``); an
embedded beat sends after each publish (it is killed by SIGTERM). Nothing here raises into
a task or a publish: a failure is counted (``zibrato.publisher.dropped{reason=
celery_hook_failed}``).

Celery is imported only by the functions that need it: importing this module imports no
framework.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from zibrato import lifecycle
from zibrato.client import Zibrato
from zibrato.errors import ConfigError
from zibrato.framework import celery_process, schema
from zibrato.framework.lazy import LazyZibrato
from zibrato.framework.schema import OTHER, TagCache, bounded
from zibrato.framework.task_units import (
    DUE_HEADER,
    FAILURE,
    OUTCOMES,
    REVOKED,
    SUCCESS,
    TASK_SWITCHES,
    UNKNOWN,
    TaskKind,
    TaskRecorder,
    TaskState,
    eta_timestamp,
    note_wait,
)
from zibrato.framework.time_spent import Switches
from zibrato.framework.units import current_unit

if TYPE_CHECKING:
    from celery import Celery, Task

HOOK_FAILED = "celery_hook_failed"
# How long an embedded beat waits for ZeroMQ to write each publish's events.
BEAT_SEND_TIMEOUT = 1.0
# Task objects whose tags are kept (a worker has as many as it registers).
MAX_TASK_KINDS = 10_000
# Lost tasks remembered by id, so that a loss reported twice counts once.
MAX_LOST_IDS = 1000

ClientSource = Zibrato | Callable[[], Zibrato]
T = TypeVar("T")
NamespaceSource = str | Callable[[], str | None] | None

# A client for instrument(app) without one: Zibrato()'s defaults ($ZIBRATO_PUBLISH).
_default_client = LazyZibrato(dict)


def instrument(
    app: Celery,
    *,
    client: ClientSource | None = None,
    level: str = schema.TASK_LEVEL,
    db_level: str = schema.DB_REQUEST_LEVEL,
    namespace: NamespaceSource = None,
    clock: Callable[[], float] = time.time,
    breakdown: bool = True,
) -> TaskInstrumentation:
    """Measure every task of ``app`` that this process publishes or runs.

    >>> from zibrato.celery import instrument
    >>> app = Celery("shop", broker="redis://127.0.0.1:6379/0")   # doctest: +SKIP
    >>> instrument(app)

    ``client``: a :class:`~zibrato.Zibrato` (or a callable returning the one in use),
    default one built on first use like ``Zibrato()``. ``level`` is the task metrics',
    ``db_level`` the per-task database metrics'. ``namespace`` (or a callable returning
    it) is the default ``db.namespace`` where a task that ran no query records 0; None:
    none. ``clock`` (seconds since the epoch) stamps published tasks and reads the stamp
    at the start: the same clock on both sides, or the queue wait carries their skew.
    ``breakdown``: record ``celery.task.breakdown`` (the ``BREAKDOWN`` setting).

    Once per app: a second call returns the first call's instrumentation unchanged.
    """
    for found in celery_process.instrumented:
        if found.app is app and isinstance(found, TaskInstrumentation):
            return found
    made = TaskInstrumentation(
        app,
        client=client,
        level=level,
        db_level=db_level,
        namespace=namespace,
        clock=clock,
        breakdown=breakdown,
    )
    made.connect()
    return made


def uninstrument(app: Celery) -> None:
    """Stop measuring ``app``'s tasks in this process (nothing if it was not measured)."""
    for found in list(celery_process.instrumented):
        if found.app is app and isinstance(found, TaskInstrumentation):
            found.disconnect()


def load_app(spec: object) -> Celery:
    """Return the Celery app ``spec`` names: ``'package.module:app'`` (or ``.app``), or the
    app itself; raise :class:`~zibrato.errors.ConfigError` saying why it cannot."""
    if not isinstance(spec, str):
        return spec  # the settings core checked its shape
    module_name, _, attribute = spec.rpartition(":" if ":" in spec else ".")
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attribute)
    except Exception as exc:  # an ImportError, or whatever the module raised
        raise ConfigError(
            f"{spec!r}: cannot import it ({type(exc).__name__}: {exc}); name the module "
            "and attribute of your Celery app, e.g. 'proj.celery:app'"
        ) from None
    if not all(hasattr(type(found), name) for name in ("tasks", "conf", "send_task")):
        raise ConfigError(f"{spec!r} is a {type(found).__name__}, not a Celery app")
    return found


# What _kinds.get() returns for a task not seen yet (None means another app's task).
_UNSEEN = TaskKind("")


class TaskInstrumentation:
    """The signal receivers of one Celery app in this process (see :func:`instrument`)."""

    def __init__(
        self,
        app: Celery,
        *,
        client: ClientSource | None,
        level: str,
        db_level: str,
        namespace: NamespaceSource,
        clock: Callable[[], float],
        breakdown: bool = True,
    ) -> None:
        self.app = app
        self.breakdown = breakdown
        self._switches = TASK_SWITCHES if breakdown else Switches(breakdown=False, statements=False)
        source = _default_client if client is None else client
        # A client object (the usual case, read directly), or a callable returning it.
        self._fixed_client = source if isinstance(source, Zibrato) else None
        self._client: Callable[[], Zibrato] = (
            _constant(source) if isinstance(source, Zibrato) else source
        )
        self._namespace = namespace if callable(namespace) else None
        self._fixed_namespace = None if callable(namespace) else namespace
        self.level = level
        self.db_level = db_level
        self.clock = clock
        self.beat = False  # this process is beat's: send after each publish
        self._tags = TagCache()
        self._kinds: dict[object, TaskKind | None] = {}
        self._other = TaskKind(OTHER)
        self._recorder: TaskRecorder | None = None
        self._lost: tuple[type[BaseException], ...] = ()
        self._lost_ids: dict[object, None] = {}  # the last tasks counted as lost, oldest first

    # -- connecting --------------------------------------------------------------------
    def connect(self) -> None:
        """Connect the receivers (idempotent)."""
        from billiard.exceptions import WorkerLostError
        from celery import signals
        from celery.exceptions import TimeLimitExceeded

        if self in celery_process.instrumented:
            return
        self._lost = (WorkerLostError, TimeLimitExceeded)
        for signal, receiver in self._receivers(signals):
            signal.connect(receiver, weak=False, dispatch_uid=(id(self), receiver.__name__))
        if not celery_process.instrumented:
            celery_process.connect(signals)
        celery_process.instrumented.append(self)

    def disconnect(self) -> None:
        """Disconnect the receivers; this app's tasks are no longer measured here."""
        from celery import signals

        if self not in celery_process.instrumented:
            return
        celery_process.instrumented.remove(self)
        for signal, receiver in self._receivers(signals):
            signal.disconnect(receiver, dispatch_uid=(id(self), receiver.__name__))
        if not celery_process.instrumented:
            celery_process.disconnect(signals)

    def _receivers(self, signals: Any) -> list[tuple[Any, Callable[..., None]]]:
        return [
            (signals.task_prerun, self.task_started),
            (signals.task_postrun, self.task_ended),
            (signals.task_failure, self.task_lost),
            (signals.task_revoked, self.task_revoked),
            (signals.task_unknown, self.message_unknown),
            (signals.task_rejected, self.message_unknown),
            (signals.beat_init, self.beat_started),
        ]

    # -- a task's run, on the thread that runs it ---------------------------------------
    # These two run for every task: the usual case is written out (a success, a finite
    # float stamp, one client), the rest is in methods of their own.
    def task_started(
        self, sender: Task | None = None, task_id: str | None = None, **_: Any
    ) -> None:
        """``task_prerun``: start the task's unit of work."""
        try:
            kind = self._kinds.get(sender, _UNSEEN)
            if kind is _UNSEEN:
                kind = self._kind_of(sender)
            if kind is None:
                return  # another app's task
            state = TaskState()
            state.kind = kind
            state.owner = self
            state.task_id = task_id
            if self._switches is not TASK_SWITCHES:
                state.switches = self._switches
            outer = current_unit.get()
            if outer is not None:
                state.outer = outer
            request = sender.request_stack.top  # type: ignore[union-attr]  # the tracer's
            if not request.is_eager:
                due = getattr(request, DUE_HEADER, None)
                if type(due) is float and due - due == 0.0:  # finite (inf - inf is nan)
                    waited = self.clock() - due
                    state.waited = waited if waited > 0 else 0.0  # skew, an ETA met early
                else:
                    note_wait(state, due, self.clock)
            state.token = current_unit.set(state)
            state.start = perf_counter()
        except Exception as failure:
            self.failed("task not measured", failure)

    def task_ended(
        self,
        sender: Task | None = None,
        task_id: str | None = None,
        retval: object = None,
        state: str | None = None,
        **_: Any,
    ) -> None:
        """``task_postrun``: end the task's unit of work and record it."""
        end = perf_counter()
        unit = current_unit.get()
        if type(unit) is not TaskState or unit.owner is not self or unit.task_id != task_id:
            return
        try:
            try:
                current_unit.reset(unit.token)
            except ValueError:  # set in another context: leave it as the task found it
                current_unit.set(unit.outer)
            if state == SUCCESS:
                tags, counted = unit.kind.success, True
            else:
                tags, counted = self._outcome_of(unit.kind, state, retval)
            recorder = self._recorder
            client = self._fixed_client or self._client()
            if recorder is None or recorder.publisher is not client.publisher:
                recorder = self.recorder()
            elif self._namespace is not None:
                recorder.namespace = self._namespace()
            recorder.record(unit, tags, end - unit.start, counted)
        except Exception as failure:
            self.failed("task not recorded", failure)

    def _outcome_of(
        self, kind: TaskKind, state: str | None, retval: object
    ) -> tuple[Mapping[str, str], bool]:
        """Return the tags of a task that did not succeed, and whether to count its outcome
        here: a process being stopped (a hard time limit's or a revoke's SIGTERM, a cold
        shutdown) leaves the outcome to the main process (task_lost, task_revoked)."""
        outcome = OUTCOMES.get(state, OTHER)
        raised = None
        if outcome == FAILURE:
            raised = retval if isinstance(retval, BaseException) else sys.exc_info()[1]
        error = schema.error_type(raised) if raised is not None else None
        return kind.outcome(outcome, error), not isinstance(raised, SystemExit | KeyboardInterrupt)

    def recorder(self) -> TaskRecorder:
        """Return the recorder for the client in use now (it changes on a settings reset)."""
        client = self._fixed_client or self._client()
        recorder = self._recorder
        if recorder is None or recorder.publisher is not client.publisher:
            recorder = self._recorder = TaskRecorder(
                client,
                tags=self._tags,
                level=self.level,
                db_level=self.db_level,
                breakdown=self.breakdown,
            )
        if self._namespace is not None:
            recorder.namespace = self._namespace()
        else:
            recorder.namespace = self._fixed_namespace
        return recorder

    def _kind_of(self, task: object) -> TaskKind | None:
        """Return the tags of ``task`` (None: another app's), remembered."""
        if getattr(task, "app", None) is not self.app:
            kind = None
        else:
            name = getattr(task, "name", None)
            kind = TaskKind(bounded(name)) if isinstance(name, str) and name else self._other
        if len(self._kinds) < MAX_TASK_KINDS:
            self._kinds[task] = kind
        return kind

    # -- outcomes the worker's main process learns --------------------------------------
    def task_lost(self, sender: Task | None = None, task_id: object = None, **named: Any) -> None:
        """``task_failure`` sent by the main process: the child died, or hit a hard limit."""
        unit = current_unit.get()
        if type(unit) is TaskState and unit.task_id == task_id:
            return  # the tracer's, inside the task: task_ended records it
        exception = named.get("exception")
        if not isinstance(exception, self._lost) or task_id in self._lost_ids:
            return  # (Celery reports a hard time limit twice)
        if len(self._lost_ids) >= MAX_LOST_IDS:
            self._lost_ids.pop(next(iter(self._lost_ids)))
        self._lost_ids[task_id] = None
        self._count_outcome(sender, FAILURE, schema.error_type(exception))

    def task_revoked(self, sender: Task | None = None, **_: Any) -> None:
        """``task_revoked``: revoked, expired or terminated before it could finish."""
        self._count_outcome(sender, REVOKED, None)

    def message_unknown(self, sender: object = None, **_: Any) -> None:
        """``task_unknown`` / ``task_rejected``: a message of no registered task."""
        if getattr(sender, "app", None) is self.app:
            self._count_outcome(None, UNKNOWN, None)

    def _count_outcome(self, task: object, outcome: str, error: str | None) -> None:
        try:
            kind = self._other if task is None else self._kinds.get(task, _UNSEEN)
            if kind is _UNSEEN:
                kind = self._kind_of(task)
            if kind is not None:
                self._client().incr(
                    schema.TASK_OUTCOMES, level=self.level, tags=kind.outcome(outcome, error)
                )
        except Exception as failure:
            self.failed("outcome not counted", failure)

    def beat_started(self, sender: object = None, **_: Any) -> None:
        """``beat_init``: beat's process sends after each publish (an embedded beat is
        killed by SIGTERM, with whatever it had not sent)."""
        if getattr(sender, "app", None) is self.app:
            self.beat = True

    # -- publishing ----------------------------------------------------------------------
    def task_name(self, name: object) -> str:
        """Return ``name`` as a tag value: a task this app registers, else ``_OTHER``."""
        if isinstance(name, str) and name in self.app.tasks:
            return bounded(name)
        return OTHER

    def stamp(self, headers: dict[str, Any]) -> None:
        """Put the time the task is due in its headers (now, or its ETA when later)."""
        due = self.clock()
        eta = headers.get("eta")
        if eta is not None:
            due = max(due, eta_timestamp(eta, due))
        headers[DUE_HEADER] = due

    def count_published(self, name: object) -> None:
        """Count one task published: in the current unit of work, else at once."""
        task = self.task_name(name)
        unit = current_unit.get()
        if unit is not None:
            unit.note_published(task)
            return
        client = self._client()
        client.incr(schema.TASK_PUBLISHED, level=self.level, tags=self._other.unit.published(task))
        if self.beat:
            lifecycle.send_all(BEAT_SEND_TIMEOUT)

    def failed(self, what: str, failure: Exception) -> None:
        """Count a failure of these hooks (never raised into a task or a publish)."""
        with contextlib.suppress(Exception):  # not even a client: nothing to count with
            self._client().publisher.reject(HOOK_FAILED, f"{what}: {failure!r}")


def _constant(value: T) -> Callable[[], T]:
    return lambda: value
