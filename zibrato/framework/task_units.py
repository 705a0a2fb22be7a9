"""One Celery task's accounting, framework-free: its tags, its state, recording it once.

A task is a unit of work like a request (:mod:`zibrato.framework.units`): a
:class:`TaskState` is the context's current unit while the task runs (the database,
HTTP-client, cache and template hooks count into it), and a :class:`TaskRecorder` appends
all the task's values at once when it ends, its time breakdown (``celery.task.breakdown``)
included. The Celery signal receivers that drive them are in :mod:`zibrato.framework.celery`;
nothing here imports Celery.

The queue wait is read from :data:`DUE_HEADER`, a stamp the publishing side puts in the
message's headers: a finite number of seconds since the epoch, anything else counted as
``bad_stamp``, none as ``no_stamp``.

>>> state = TaskState()
>>> note_wait(state, 99.5, clock=lambda: 100.0); state.waited
0.5
>>> note_wait(state, float("nan"), clock=lambda: 100.0); state.unmeasured
'bad_stamp'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextvars import Token
from datetime import UTC, datetime

from zibrato.client import Zibrato
from zibrato.framework import schema
from zibrato.framework.recording import SeriesCache
from zibrato.framework.schema import TASK_DATABASE, TagCache, UnitTags, bounded
from zibrato.framework.time_spent import Switches
from zibrato.framework.units import UnitRecorder, UnitState
from zibrato.protocol import COUNTER, TIMER

# The header the publishing side stamps: when the task became due, in seconds since the
# epoch (its publish time, or its ETA when that is later).
DUE_HEADER = "zibrato_due"
# celery.states -> celery.task.outcome (None: a BaseException went through the tracer).
OUTCOMES: Mapping[str | None, str] = {
    "SUCCESS": "success",
    "FAILURE": "failure",
    "RETRY": "retry",
    "IGNORED": "ignored",
    "REJECTED": "rejected",
    None: "failure",
}
SUCCESS = "SUCCESS"  # celery.states.SUCCESS
FAILURE, REVOKED, UNKNOWN = "failure", "revoked", "unknown"
NO_STAMP, BAD_STAMP = "no_stamp", "bad_stamp"  # celery.task.queue.unmeasured{reason}


class TaskKind:
    """The tags of one task's metrics, built once: per outcome and error type."""

    __slots__ = ("_outcomes", "_unmeasured", "name", "success", "unit")

    def __init__(self, name: str) -> None:
        self.name = name
        self.unit = UnitTags({schema.TASK_NAME: name})
        self._outcomes: dict[tuple[str, str | None], Mapping[str, str]] = {}
        self.success = self.outcome("success")
        self._unmeasured = {
            reason: {schema.TASK_NAME: name, schema.REASON: reason}
            for reason in (NO_STAMP, BAD_STAMP)
        }

    def outcome(self, outcome: str, error: str | None = None) -> Mapping[str, str]:
        """Return the tags of this task's duration and outcome with ``outcome``."""
        key = (outcome, error)
        found = self._outcomes.get(key)
        if found is None:
            tags = {schema.TASK_NAME: self.name, schema.TASK_OUTCOME: outcome}
            if error is not None:
                tags[schema.ERROR_TYPE] = bounded(error)
            found = tags
            if len(self._outcomes) < schema.MAX_CACHED_TAGS:
                self._outcomes[key] = found
        return found

    def unmeasured(self, reason: str) -> Mapping[str, str]:
        """Return the tags of ``celery.task.queue.unmeasured`` for ``reason``."""
        return self._unmeasured[reason]


# What a task measures of where its time goes: everything but the repeated statements
# (a worker would walk stacks that no one shows), unless its app's settings say less.
TASK_SWITCHES = Switches(statements=False)


class TaskState(UnitState):
    """What one running task accumulates until ``task_postrun`` records it."""

    switches = TASK_SWITCHES

    kind: TaskKind
    owner: object  # the instrumentation that started it
    task_id: str | None
    token: Token[UnitState | None]
    start: float
    waited: float | None = None  # the queue wait, when the message carried a usable stamp
    unmeasured: str | None = None  # why not (NO_STAMP, BAD_STAMP), eager tasks aside


class TaskRecorder(UnitRecorder):
    """Record whole tasks of one app into one client: every value of a task at once, into
    the series of the task's cached tags (a few list appends per task)."""

    __slots__ = ("_outcomes", "_runs", "_unmeasured", "_waits")

    def __init__(
        self,
        client: Zibrato,
        *,
        tags: TagCache,
        level: str = schema.TASK_LEVEL,
        db_level: str = schema.DB_REQUEST_LEVEL,
        namespace: str | None = None,
        breakdown: bool = True,
    ) -> None:
        super().__init__(
            client,
            tags=tags,
            level=level,
            db_level=db_level,
            namespace=namespace,
            database=TASK_DATABASE,
            breakdown=schema.TASK_BREAKDOWN if breakdown else None,
        )
        in_level = self._level or level
        self._runs = SeriesCache(client, in_level, TIMER, schema.TASK_DURATION)
        self._outcomes = SeriesCache(client, in_level, COUNTER, schema.TASK_OUTCOMES)
        self._waits = SeriesCache(client, in_level, TIMER, schema.TASK_QUEUE_DURATION)
        self._unmeasured = SeriesCache(client, in_level, COUNTER, schema.TASK_QUEUE_UNMEASURED)

    def record(
        self, state: TaskState, tags: Mapping[str, str], seconds: float, counted: bool = True
    ) -> None:
        """Record one task that ran for ``seconds``, its outcome in ``tags`` (counted unless
        ``counted`` is False: the worker's main process counts it)."""
        kind = state.kind
        if self._level is not None:
            self._runs.get(tags).add(seconds)
            if counted:
                self._outcomes.get(tags).add(1)
            if state.waited is not None:
                self._waits.get(kind.unit.unit).add(state.waited)
            elif state.unmeasured is not None:
                self._unmeasured.get(kind.unmeasured(state.unmeasured)).add(1)
        if state.tally is not None or self.namespace is not None:
            self._record_database(kind.unit, state.tally)
        if state.published is not None:
            self._record_published(kind.unit, state.published)
        # celery.task.breakdown (from the same code as http.server.request.breakdown),
        # and the task's outgoing calls; a task records no cache or template metrics of
        # its own (they are per request), their time is in its breakdown.
        parts = self.time_spent.parts(kind.unit)
        if state.noted:
            self._record_time(kind.unit, state, seconds, parts)
        elif parts is not None:
            self.time_spent.record_breakdown(state, seconds, parts)  # db and app only


def note_wait(state: TaskState, due: object, clock: Callable[[], float]) -> None:
    """Note the queue wait from a stamp read off a message (``clock``: seconds since the epoch),
    or why there is none; never negative (clock skew, an ETA met a moment early)."""
    if due is None:
        state.unmeasured = NO_STAMP
        return
    try:
        stamp = float(due)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        stamp = math.nan
    if type(due) is not int or not math.isfinite(stamp):
        state.unmeasured = BAD_STAMP
        return
    waited = clock() - stamp
    state.waited = waited if waited > 0 else 0.0


def eta_timestamp(eta: object, default: float) -> float:
    """Return an ETA header (ISO 8601; naive means UTC, as Celery reads it) as seconds."""
    try:
        when = datetime.fromisoformat(eta) if isinstance(eta, str) else None
    except ValueError:
        return default
    if when is None:
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
