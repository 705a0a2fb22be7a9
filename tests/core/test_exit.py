"""What a process records just before it exits still gets out, within the linger."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap

import pytest

EVENTS = 2_000  # about 8 kB each: ~16 MB, far more than the kernel buffers of one connection

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from zibrato import Zibrato

    address, style = sys.argv[1], sys.argv[2]
    z = Zibrato(publish=address, linger=5.0)
    z.incr("exit.connected")
    z.flush()  # the broker has told us its subscriptions
    print("ready", flush=True)
    sys.stdin.readline()
    tags = {f"tag{i}": "v" * 250 for i in range(32)}
    for _ in range({events}):
        z.incr("exit.bulk", tags=tags)
    print("closing", flush=True)
    if style == "os._exit":  # how forked and multiprocessing children leave
        z.close()
        os._exit(0)
    # otherwise a normal exit: the client is closed by the library at exit
    """
).replace("{events}", str(EVENTS))


@pytest.mark.parametrize("style", ["os._exit", "normal"])
def test_events_recorded_before_exit_are_delivered_within_the_linger(
    broker_process, subscribe, style
):
    """close() (explicit, or at exit) must not let the process end before its batches left.

    The broker is paused while the client sends, so the batches pile up in the client
    process. ZeroMQ honours a socket's linger only while its context lives: a process that
    exits right after close() kills libzmq's I/O thread with whatever it had not written,
    unless close() waits for it (for instance by terminating the context).
    """
    broker_cli, broker = broker_process
    collector = subscribe()
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, broker.frontend, style],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    paused = False
    try:
        assert process.stdin is not None and process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        broker_cli.signal(signal.SIGSTOP)
        paused = True
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "closing"
        # Resume the broker once the client has exited, or 0.5 s into its 5 s linger.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.5)
        broker_cli.signal(signal.SIGCONT)
        paused = False
        code = process.wait(15)
        assert code == 0
        collector.wait_for(
            lambda got: len(collector.named("exit.bulk")) >= EVENTS, "every event", timeout=5
        )
    finally:
        if paused:
            broker_cli.signal(signal.SIGCONT)
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=15)
    collector.settle()
    assert len(collector.named("exit.bulk")) == EVENTS
