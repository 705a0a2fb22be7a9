"""`make run`: `zibrato run` (broker + console backend) and the example workload.

Everything runs on the embedded defaults: publishers connect to tcp://127.0.0.1:5550,
subscribers to tcp://127.0.0.1:5551, and the console backend prints a table of every
series each flush (5 s here). Stop with Ctrl-C; set ZIBRATO_DEMO_SECONDS to stop by
itself. Extra `zibrato run` options go in ZIBRATO_RUN_ARGS, e.g.
`ZIBRATO_RUN_ARGS="--backend console --backend prometheus" make run`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time


def main() -> int:
    seconds = os.environ.get("ZIBRATO_DEMO_SECONDS", "0")
    run_args = shlex.split(os.environ.get("ZIBRATO_RUN_ARGS", "--flush 5"))
    service = subprocess.Popen([sys.executable, "-m", "zibrato", "run", *run_args])
    time.sleep(0.5)
    if service.poll() is not None:
        return service.returncode or 1
    workload = subprocess.Popen(
        [
            sys.executable,
            os.path.join(os.path.dirname(__file__), "workload.py"),
            "--seconds",
            seconds,
        ]
    )
    try:
        workload.wait()
    except KeyboardInterrupt:
        workload.wait()
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGINT)  # lets it flush what it aggregated
        try:
            service.wait(timeout=5)
        except subprocess.TimeoutExpired:
            service.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
