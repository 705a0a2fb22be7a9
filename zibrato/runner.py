"""Run a broker and any number of backends in one process: the embedded default.

``zibrato run``, ``zibrato broker``, ``zibrato backend`` and the framework commands
(``manage.py zibrato_broker``, ``flask zibrato broker``) all go through :func:`serve`:
start, say where every part listens, wait for SIGINT or SIGTERM, stop with a final flush,
and turn a user's mistake (an address in use, a backend that cannot start) into one line
and exit status 2.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND
from zibrato.backends.base import Backend
from zibrato.broker import Broker
from zibrato.errors import AddressInUse, ConfigError
from zibrato.security.curve import client_keys, curve_line

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# How often serve() looks for a part that stopped by itself.
HEALTH_CHECK_SECONDS = 0.5


class Runner:
    """A broker (optional) plus backends that subscribe to it, started and stopped together.

    >>> runner = Runner(backends=[ConsoleBackend()])      # doctest: +SKIP
    >>> runner.start(); ...; runner.stop()

    With ``broker=False`` the backends connect to ``backend_address``, where some other
    broker already runs (``zibrato backend KIND``).
    """

    def __init__(
        self,
        backends: Sequence[Backend] = (),
        *,
        frontend: str = DEFAULT_FRONTEND,
        backend_address: str = DEFAULT_BACKEND,
        broker: bool = True,
        curve: str | os.PathLike[str] | None = None,
        insecure: bool = False,
    ) -> None:
        # CURVE keys directory (zibrato.security.curve) for the broker and the backends; without
        # it the broker binds only loopback addresses, unless ``insecure``.
        self.curve = curve
        self.broker = (
            Broker(frontend, backend_address, curve=curve, insecure=insecure) if broker else None
        )
        self.frontend = frontend
        self.backend_address = backend_address
        self.backends = list(backends)

    def start(self) -> tuple[str, str]:
        """Bind the broker, connect every backend to it; return the broker's addresses.

        Raises :class:`~zibrato.errors.ConfigError` (nothing left running) when an address
        is taken or a backend cannot start.
        """
        keys = client_keys(self.curve) if self.curve is not None and self.backends else None
        if self.broker is not None:
            self.frontend, self.backend_address = self.broker.start()
        started: list[Backend] = []
        try:
            for backend in self.backends:
                backend.connect = self.backend_address
                backend.curve = keys
                try:
                    backend.start()
                except OSError as exc:
                    raise _cannot_start(backend, exc) from None
                started.append(backend)
        except BaseException:
            for backend in started:
                backend.stop()
            if self.broker is not None:
                self.broker.stop()
            raise
        return self.frontend, self.backend_address

    def stop(self, timeout: float = 1.5) -> None:
        """Stop every backend (each emits a final rollup), then the broker."""
        # Backends stop in parallel so that one hanging target cannot use up the others'
        # share of the shutdown budget.
        stoppers = [
            threading.Thread(target=backend.stop, args=(timeout,), daemon=True)
            for backend in self.backends
        ]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(timeout + 0.2)
        if self.broker is not None:
            self.broker.stop(timeout=1.0)

    def run(self, stop: threading.Event) -> None:
        """Start, wait for ``stop``, then stop."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    def failure(self) -> str | None:
        """Say which part stopped by itself, and why; ``None`` while every part runs."""
        if self.broker is not None and self.broker.failure is not None:
            return f"the broker stopped: {self.broker.failure}"
        for backend in self.backends:
            if not backend.healthy():
                why = backend.failure or "a thread of it ended"
                return f"the {backend.kind} backend stopped: {why}"
        return None

    def describe(self) -> list[str]:
        """Return one line per part: where publishers and subscribers connect, each backend."""
        lines = []
        if self.broker is not None:
            lines.append(
                f"publishers connect to {self.frontend}; "
                f"subscribers connect to {self.backend_address}"
            )
        if self.curve is not None:
            lines.append(curve_line(self.curve, broker=self.broker is not None))
        for backend in self.backends:
            lines.append(
                f"{backend.kind} backend: {backend.describe()} "
                f"(receiving level {backend.level}+ from {backend.connect}, "
                f"flushing every {backend.flush_interval:g}s)"
            )
        return lines


def _cannot_start(backend: Backend, exc: OSError) -> ConfigError:
    if isinstance(exc, ConfigError):
        return exc
    what = f"the {backend.kind} backend cannot start"
    if exc.errno == errno.EADDRINUSE:
        return AddressInUse(
            f"{what} ({backend.describe()}): the address is already in use; "
            "stop what holds it or choose another with the backend's listen option"
        )
    return ConfigError(f"{what}: {exc.strerror or exc}")


def stop_on_signals() -> threading.Event:
    """Return an event that SIGINT or SIGTERM sets (install from the main thread).

    Not from a Python handler: those run only in the main thread, between bytecodes, so a
    main thread asleep in ``stop.wait()`` never saw a signal that the kernel handed to
    another thread, and setting the event inside a handler deadlocked on the event's lock
    when a second signal (Ctrl-C twice) interrupted the first handler. Python's own C
    handler writes every signal to a wakeup socket, in whichever thread it runs; a watcher
    thread reads it and sets the event.
    """
    stop = threading.Event()
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _noted_by_the_wakeup_socket)
    threading.Thread(
        target=_set_on_signal, args=(stop, reader, writer), name="zibrato-signals", daemon=True
    ).start()
    return stop


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _noted_by_the_wakeup_socket(signum: int, frame: Any) -> None:
    """Do nothing: a Python handler is what makes Python write the signal to the socket."""


def _set_on_signal(stop: threading.Event, reader: socket.socket, writer: socket.socket) -> None:
    # ``writer`` is held here, and never closed, so that its file descriptor stays the
    # wakeup one: closed, its number could be reused by a file that later signals (a second
    # Ctrl-C) would then be written into. Only the main thread may unset the wakeup fd.
    for received in iter(lambda: reader.recv(64), b""):
        if any(signum in STOP_SIGNALS for signum in received):
            stop.set()


def serve(
    runner: Runner,
    *,
    name: str = "zibrato run",
    stop: threading.Event | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``runner`` until SIGINT/SIGTERM (or ``stop``); return the exit status.

    Prints where every part listens and how to stop, then, at the end, stops every part
    (backends flush what they aggregated). A :class:`~zibrato.errors.ConfigError` while
    starting (an address in use, a backend that cannot start) is printed as one line on
    ``err`` and gives exit status 2, with nothing left running. A part that stops by itself
    while running (a thread ended by a bug: see :meth:`Runner.failure`) is printed as one
    line on ``err`` too, and gives exit status 1 after the others' final flush, so that a
    supervisor (systemd, Kubernetes) restarts a pipeline that would otherwise look up but
    deliver nothing.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if stop is None:
        stop = stop_on_signals()
    try:
        runner.start()
    except ConfigError as exc:
        print(f"{name}: {exc}", file=err, flush=True)
        return EXIT_USAGE
    try:
        for line in runner.describe():
            print(f"{name}: {line}", file=out)
        print(f"{name}: running; Ctrl-C to stop", file=out, flush=True)
        failure = None
        while not stop.wait(HEALTH_CHECK_SECONDS):
            failure = runner.failure()
            if failure is not None:
                print(f"{name}: {failure}; stopping the rest", file=err, flush=True)
                break
    finally:
        runner.stop()
    print(f"{name}: stopped", file=out, flush=True)
    return EXIT_OK if failure is None else EXIT_FAILED
