"""Run a broker and any number of backends in one process: the embedded default.

``zibrato run`` and the framework adapters (``manage.py zibrato_broker``,
``flask zibrato broker``) all start their services through :class:`Runner`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from zibrato.addresses import DEFAULT_BACKEND, DEFAULT_FRONTEND
from zibrato.backends.base import Backend
from zibrato.broker import Broker


class Runner:
    """A broker plus backends that subscribe to it, started and stopped together.

    >>> runner = Runner(backends=[ConsoleBackend()])      # doctest: +SKIP
    >>> runner.start(); ...; runner.stop()
    """

    def __init__(
        self,
        backends: Sequence[Backend] = (),
        *,
        frontend: str = DEFAULT_FRONTEND,
        backend_address: str = DEFAULT_BACKEND,
    ) -> None:
        self.broker = Broker(frontend, backend_address)
        self.backends = list(backends)

    def start(self) -> tuple[str, str]:
        """Bind the broker, connect every backend to it; return the broker's addresses."""
        frontend, backend_address = self.broker.start()
        started: list[Backend] = []
        try:
            for backend in self.backends:
                backend.connect = backend_address
                backend.start()
                started.append(backend)
        except BaseException:
            for backend in started:
                backend.stop()
            self.broker.stop()
            raise
        return frontend, backend_address

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
        self.broker.stop()

    def run(self, stop: threading.Event) -> None:
        """Start, wait for ``stop``, then stop."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
