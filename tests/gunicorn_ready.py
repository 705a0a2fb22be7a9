"""gunicorn's configuration for the R3 tests: each worker says when it can take a signal.

A worker installs its signal handlers in ``init_process``, after the fork. A SIGTERM that
reaches it before then goes to the handler it inherited from the master, which queues the
signal in the master's copy of its queue: the worker never sees it and serves on until
gunicorn kills it at the graceful timeout (5.10 s for a stop, once in CI). A gevent
worker monkey-patches first, so its window is the longest. The tests stop gunicorn only
once every worker has printed the line below (``post_worker_init`` runs after the signal
handlers are in place).
"""

from __future__ import annotations

import sys
from typing import Any


def post_worker_init(worker: Any) -> None:
    print(f"zibrato-test: worker {worker.pid} ready", file=sys.stderr, flush=True)
