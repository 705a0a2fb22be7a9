"""The backend base class: subscribe, decode, aggregate, and flush on a timer.

A subclass implements only :meth:`Backend.emit` (how one rollup is sent) and, if it
has options, declares them in ``options``. Receiving runs on one thread and flushing on
another, so a slow or failing target never stops the backend from receiving.

Neither thread dies of what it receives: an unexpected exception costs the batch (or the
flush) it came from, is counted in ``internal_errors`` by reason and logged once, and the
thread goes on. Should a thread end anyway, :attr:`Backend.failure` says why and
:meth:`Backend.healthy` turns false, so that whoever runs the backend can exit non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

import zmq

from zibrato import levels
from zibrato.addresses import DEFAULT_BACKEND
from zibrato.aggregation import (
    DEFAULT_MAX_SERIES,
    DEFAULT_MAX_VALUES,
    DEFAULT_PERCENTILES,
    Aggregator,
    Rollup,
    Series,
    SeriesType,
    summarize,
)
from zibrato.protocol import Batch
from zibrato.security.curve import ClientKeys
from zibrato.subscriber import Subscriber

log = logging.getLogger("zibrato")

DEFAULT_FLUSH_INTERVAL = 10.0


@dataclass(frozen=True)
class Option:
    """One backend option: ``--name`` on ``zibrato backend KIND``, ``--KIND-name`` on ``run``.

    ``name`` is also the constructor keyword (dashes become underscores).
    """

    name: str
    help: str
    type: Any = str
    default: Any = None
    choices: Sequence[Any] | None = None
    flag: bool = False  # a store_true switch
    metavar: str | None = None  # the value's name in --help (default: NAME in capitals)

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


class BackendOptions(TypedDict, total=False):
    """The keywords every backend takes (:class:`Backend`'s), for a subclass's ``**common``::

    def __init__(self, *, path: str = "m.jsonl", **common: Unpack[BackendOptions]) -> None:
        super().__init__(**common)
    """

    connect: str
    level: str
    flush_interval: float
    percentiles: Iterable[float]
    max_series: int
    max_values: int
    context: zmq.Context[Any] | None


class Backend:
    """Receive events at or above ``level`` and emit one rollup per flush interval.

    >>> class PrintBackend(Backend):
    ...     kind = "print"
    ...     def emit(self, rollup):
    ...         for series in rollup.series:
    ...             print(series.name, dict(series.stats))
    >>> backend = PrintBackend(connect="tcp://127.0.0.1:5551", flush_interval=1.0)  # doctest: +SKIP
    >>> backend.start(); ...; backend.stop()     # or backend.run(stop_event)      # doctest: +SKIP
    """

    kind: ClassVar[str] = "backend"
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(
        self,
        *,
        connect: str = DEFAULT_BACKEND,
        level: str = levels.DEFAULT_THRESHOLD,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        percentiles: Iterable[float] = DEFAULT_PERCENTILES,
        max_series: int = DEFAULT_MAX_SERIES,
        max_values: int = DEFAULT_MAX_VALUES,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if flush_interval <= 0:
            raise ValueError("flush_interval must be positive")
        self.connect = connect
        self.level = levels.normalize(level)
        self.flush_interval = flush_interval
        self.aggregator = Aggregator(
            percentiles=percentiles, max_series=max_series, max_values=max_values
        )
        self._context = context
        # CURVE keys for the subscriber (zibrato.security.curve); the runner sets them.
        self.curve: ClientKeys | str | os.PathLike[str] | None = None
        self._lock = threading.Lock()
        # Set when stopping: subclasses may wait on it to cut a retry pause short.
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscriber: Subscriber | None = None
        self._interval_start = time.monotonic()
        self._warned: set[object] = set()
        # health, cumulative since start
        self.flushes = 0
        self.target_errors = 0
        self.internal_errors: dict[str, int] = {}
        self.failure: str | None = None  # why a thread of ours ended, if one did
        self.last_flush_seconds = 0.0
        self._reported: dict[tuple[str, str], float] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} connect={self.connect!r} level={self.level!r}>"

    @property
    def received_events(self) -> int:
        """How many events have arrived from the broker since start (valid or not)."""
        return self._subscriber.events if self._subscriber is not None else 0

    # -- what a subclass provides ------------------------------------------------------
    def emit(self, rollup: Rollup) -> None:
        """Send one rollup to the target. Raise on failure: it is counted and logged."""
        raise NotImplementedError

    def describe(self) -> str:
        """Return where this backend sends or serves, for the lines printed at startup."""
        return "started"

    def close_target(self) -> None:
        """Release what the target holds (files, sockets, servers). Called once at stop."""

    def target_counters(self) -> Mapping[str, float]:
        """Cumulative counts the target keeps (say, lines dropped while it was down).

        Each is published at every flush as the counter ``zibrato.backend.NAME``.
        """
        return {}

    # -- running -----------------------------------------------------------------------
    def start(self) -> None:
        """Connect and start the receiving and flushing threads."""
        self._subscriber = Subscriber(
            # Value lists stay whole: the aggregation folds a series' values in at once.
            self.connect,
            level=self.level,
            context=self._context,
            curve=self.curve,
            expand=False,
        )
        self._interval_start = time.monotonic()
        self._threads = [
            threading.Thread(
                target=self._guarded,
                args=(self._receive_loop,),
                name=f"zibrato-{self.kind}-recv",
                daemon=True,
            ),
            threading.Thread(
                target=self._guarded,
                args=(self._flush_loop,),
                name=f"zibrato-{self.kind}-flush",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop receiving, emit what was aggregated, and release the target.

        Returns within about ``timeout`` seconds even when the target hangs.
        """
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None
        try:
            self.close_target()
        except Exception as exc:
            self._target_failed(exc)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then stop cleanly (final flush included)."""
        self.start()
        stop.wait()
        self.stop()

    def healthy(self) -> bool:
        """Whether every thread of this backend is running (or was stopped on purpose)."""
        if self.failure is not None:
            return False
        return self.stop_event.is_set() or all(thread.is_alive() for thread in self._threads)

    def _guarded(self, loop: Callable[[], None]) -> None:
        """Run one of our threads; if it ends by an exception, record it as the failure."""
        try:
            loop()
        except BaseException as exc:  # the thread ends here: say so, once, loudly
            self.failure = f"{threading.current_thread().name} died: {type(exc).__name__}: {exc}"
            log.critical("zibrato %s backend: %s", self.kind, self.failure, exc_info=True)

    def count_internal_error(self, reason: str, exc: BaseException) -> None:
        """Count an unexpected exception that cost one batch or one flush; log it once."""
        self.internal_errors[reason] = self.internal_errors.get(reason, 0) + 1
        if ("internal", reason) not in self._warned:
            self._warned.add(("internal", reason))
            log.error(
                "zibrato %s backend: %s (%s: %s); carrying on, further ones are counted in "
                "zibrato.backend.internal_errors{reason=%s}",
                self.kind,
                reason.replace("_", " "),
                type(exc).__name__,
                exc,
                reason,
                exc_info=True,
            )

    def _take_in(self, batch: Batch) -> None:
        try:
            with self._lock:
                self.aggregator.add(batch)
        except Exception as exc:  # the aggregator never raises; if it does, lose one batch
            self.count_internal_error("batch_failed", exc)

    def _receive_loop(self) -> None:
        subscriber = self._subscriber
        assert subscriber is not None
        while not self.stop_event.is_set():
            try:
                batch = subscriber.receive(timeout=0.1)
                while batch is not None:
                    self._take_in(batch)
                    batch = subscriber.receive_ready()
            except zmq.ContextTerminated:
                return
            except Exception as exc:
                self.count_internal_error("receive_failed", exc)
                self.stop_event.wait(0.1)  # not a hot loop if it keeps failing
        # Stopping: take in what has already arrived (briefly), so the final flush has it.
        deadline = time.monotonic() + 0.2
        with contextlib.suppress(zmq.ZMQError):
            while time.monotonic() < deadline and (batch := subscriber.receive(0.02)) is not None:
                self._take_in(batch)

    def _flush_loop(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        while not self.stop_event.wait(max(0.0, next_flush - time.monotonic())):
            next_flush += self.flush_interval
            if next_flush < time.monotonic():  # a flush overran: do not try to catch up
                next_flush = time.monotonic() + self.flush_interval
            self._guarded_flush()
        # Wait for the receiver to finish its last batch, then emit what is left.
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(0.5)
        self._guarded_flush()

    def _guarded_flush(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # flush() contains its failures; if not, lose one interval
            self.count_internal_error("flush_failed", exc)

    def flush(self) -> Rollup:
        """Close the current interval now, emit its rollup, and return it."""
        started = time.monotonic()
        with self._lock:
            # The interval is measured on the monotonic clock; the wall clock only stamps it.
            interval = max(started - self._interval_start, 1e-9)
            self._interval_start = started
            now = time.time()
            health = self._health_series(interval)
            state = self.aggregator.take()
        rollup = summarize(state, now, interval, self.aggregator.percentiles)
        rollup = Rollup(rollup.timestamp, rollup.interval, (*rollup.series, *health))
        try:
            self.emit(rollup)
        except Exception as exc:
            self._target_failed(exc)
        self.flushes += 1
        self.last_flush_seconds = time.monotonic() - started
        return rollup

    def _target_failed(self, exc: BaseException) -> None:
        self.target_errors += 1
        reason = type(exc).__name__
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning(
                "zibrato %s backend: target failed (%s); further failures of this "
                "kind are counted in zibrato.backend.target_errors",
                self.kind,
                exc,
            )

    def count_target_error(self, exc: BaseException) -> None:
        """For subclasses that recover from a failure themselves: count and log it once."""
        self._target_failed(exc)

    # -- own health ----------------------------------------------------------------------
    def _health_series(self, interval: float) -> list[Series]:
        """The backend's own health as series (called under the lock, at each flush).

        Always: ``events``, ``lost_events``, ``target_errors`` (counters) and ``series``,
        ``flush_seconds`` (gauges); when non-zero: ``bad_messages``/``bad_events`` by
        ``reason``, ``dropped_series``, ``sampled_values``. All tagged ``backend=KIND``.
        Also when non-zero: ``dropped_set_members`` (new set members past the cap).
        """
        agg, sub = self.aggregator, self._subscriber
        totals: dict[tuple[str, str], float] = {
            ("events", ""): sub.events if sub else 0,
            ("lost_events", ""): sub.losses.lost_events if sub else 0,
            ("target_errors", ""): self.target_errors,
        }
        for name, total in self.target_counters().items():
            totals[name, ""] = total
        for reason, count in (sub.bad_messages if sub else {}).items():
            totals["bad_messages", reason] = count
        for reason, count in self.internal_errors.items():
            totals["internal_errors", reason] = count
        series = []
        for (name, reason), total in totals.items():
            delta = total - self._reported.get((name, reason), 0)
            self._reported[name, reason] = total
            if delta or not reason:
                series.append(self._health_counter(name, delta, interval, reason))
        for reason, count in agg.rejected.items():
            series.append(self._health_counter("bad_events", count, interval, reason))
        for name, count in (
            ("dropped_series", agg.dropped_series),
            ("sampled_values", agg.sampled_values),
            ("dropped_set_members", agg.dropped_set_members),
        ):
            if count:
                series.append(self._health_counter(name, count, interval))
        for name, value in (
            ("series", agg.series_count),
            ("flush_seconds", self.last_flush_seconds),
            ("healthy", 1 if self.healthy() else 0),
        ):
            series.append(
                Series(
                    f"zibrato.backend.{name}",
                    SeriesType.GAUGE,
                    None,
                    {"backend": self.kind},
                    {"value": value},
                )
            )
        agg.rejected = {}
        agg.dropped_series = 0
        agg.sampled_values = 0
        agg.dropped_set_members = 0
        return series

    def _health_counter(self, name: str, value: float, interval: float, reason: str = "") -> Series:
        tags = {"backend": self.kind, "reason": reason} if reason else {"backend": self.kind}
        return Series(
            f"zibrato.backend.{name}",
            SeriesType.COUNTER,
            None,
            tags,
            {"sum": value, "rate": value / interval},
        )

    # -- command line ------------------------------------------------------------------
    @classmethod
    def from_options(cls, common: Mapping[str, Any], options: Mapping[str, Any]) -> Backend:
        """Build a backend from the common settings and this kind's option values."""
        return cls(**common, **options)
