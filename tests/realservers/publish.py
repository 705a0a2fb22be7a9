"""Publish a workload from a process of its own, as an application process would.

Usage: ``python publish.py FRONTEND WORKLOAD_JSON``. The workload is
``{"source": "web-1", "calls": [["incr", ["orders", 1], {"tags": {"shop": "eu"}}, 1000]]}``:
each call names a ``Zibrato`` method (or ``sleep``, seconds), its arguments, its keywords
and how many times to make it; ``"repeat": N`` runs the whole list N times. Prints the
client's stats as JSON; exits 1 if it dropped anything.
"""

from __future__ import annotations

import json
import sys
import time

from zibrato import Zibrato


def main() -> int:
    """Make the calls, send them, and report what the client counted."""
    frontend, workload = sys.argv[1], json.loads(sys.argv[2])
    client = Zibrato(frontend, source=workload.get("source"))
    try:
        for _ in range(workload.get("repeat", 1)):
            for method, args, kwargs, times in workload["calls"]:
                call = time.sleep if method == "sleep" else getattr(client, method)
                for _ in range(times):
                    call(*args, **kwargs)
        client.flush(timeout=10)
    finally:
        client.close(linger=5)
    stats = client.stats()
    print(json.dumps(stats), flush=True)
    return 1 if stats["dropped"] else 0


if __name__ == "__main__":
    sys.exit(main())
