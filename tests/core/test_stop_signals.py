"""``zibrato.runner.stop_on_signals``: every long-running command stops on SIGINT or
SIGTERM, whichever thread the kernel hands the signal to, and however fast they come.

Each case runs in a Python process of its own (signal handlers are process-wide).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROLOGUE = """
import os, signal, threading, time
from zibrato.runner import stop_on_signals
stop = stop_on_signals()
busy = [threading.Thread(target=time.sleep, args=(30,), daemon=True) for _ in range(4)]
for thread in busy:
    thread.start()
"""


def run(body: str) -> str:
    script = PROLOGUE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_handed_to_another_thread_stops_the_waiting_main_thread(signum: str) -> None:
    # Python runs handlers in the main thread only; asleep in wait(), it never saw this one.
    out = run(
        f"""
        # Sent once the main thread sleeps in wait(), to a thread that is not the main one.
        threading.Timer(0.5, signal.pthread_kill, args=(busy[0].ident, signal.{signum})).start()
        print("stopped" if stop.wait(10) else "missed")
        """
    )
    assert out == "stopped\n"


def test_signals_in_quick_succession_never_deadlock_the_main_thread() -> None:
    # A handler that set the event ran in the main thread, which may hold the event's lock
    # itself at that moment (in wait(), or in a first handler interrupted by a second
    # signal: Ctrl-C pressed twice), and waited for that lock forever.
    out = run(
        """
        def send():
            for _ in range(2000):
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
        sender = threading.Thread(target=send)
        sender.start()
        while sender.is_alive():  # the main thread in and out of the event's lock
            stop.wait(0.0001)
        print("stopped" if stop.wait(10) else "missed", flush=True)
        """
    )
    assert out == "stopped\n"


def test_other_signals_do_not_stop() -> None:
    out = run(
        """
        signal.signal(signal.SIGUSR1, lambda *_: None)  # written to the wakeup socket too
        os.kill(os.getpid(), signal.SIGUSR1)
        print("stopped" if stop.wait(1) else "running")
        """
    )
    assert out == "running\n"
