"""`make run`: a broker, a live tail of every event, and the example workload.

Everything runs on the embedded defaults (tcp://127.0.0.1:5550 and :5551). Stop with
Ctrl-C; set ZIBRATO_DEMO_SECONDS to stop by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main() -> int:
    seconds = os.environ.get("ZIBRATO_DEMO_SECONDS", "0")
    broker = subprocess.Popen([sys.executable, "-m", "zibrato", "broker"])
    tail = subprocess.Popen([sys.executable, "-m", "zibrato", "tail"])
    workload = subprocess.Popen(
        [
            sys.executable,
            os.path.join(os.path.dirname(__file__), "workload.py"),
            "--seconds",
            seconds,
        ]
    )
    try:
        return workload.wait()
    except KeyboardInterrupt:
        return workload.wait()
    finally:
        for proc in (tail, broker):
            proc.terminate()
        for proc in (tail, broker):
            proc.wait(timeout=5)


if __name__ == "__main__":
    raise SystemExit(main())
