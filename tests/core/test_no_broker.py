"""With no broker at all, instrumentation stays cheap, raises nothing and never hangs exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

CALLS = 100_000


def test_calls_without_a_broker_raise_nothing_and_stay_fast(new_client, dead_address):
    z = new_client(publish=dead_address)
    started = time.perf_counter()
    for i in range(CALLS // 4):
        z.incr("nobroker.count")
        z.timing("nobroker.timing", 0.001)
        z.gauge("nobroker.gauge", i)
        with z.timer("nobroker.block"):
            pass
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"{CALLS} calls took {elapsed:.2f} s"  # generous: a test, not a benchmark

    started = time.monotonic()
    z.flush(timeout=0.1)  # nobody to send to: returns, bounded by its timeout
    z.close()
    assert time.monotonic() - started < 2.0
    assert z.stats()["sent_events"] == 0


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from zibrato import Zibrato

    z = Zibrato(publish=sys.argv[1])
    for i in range(100_000):
        z.incr("exit.test")
    print(time.time(), flush=True)
    """
)


def test_process_exits_promptly_after_its_last_call_without_a_broker(dead_address):
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, dead_address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    exited = time.time()
    assert result.returncode == 0, result.stderr
    last_call = float(result.stdout.strip())
    # The linger is 0.25 s; interpreter teardown and process reaping come on top.
    assert exited - last_call < 1.0, f"exit took {exited - last_call:.2f} s after the last call"
