"""With no broker at all, instrumentation stays cheap, raises nothing and never hangs exit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref

from zibrato import Zibrato, publisher
from zibrato.publisher import Publisher

CALLS = 100_000


def collect(released: weakref.ref[Publisher]) -> list[warnings.WarningMessage]:
    """Garbage-collect a closed client's publisher; return the ResourceWarnings that raises.

    A client that was closed must leave no unclosed ZeroMQ socket behind for the garbage
    collector to complain about (``ResourceWarning: Unclosed socket``).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deadline = time.monotonic() + 5
        # Its publisher thread lets go of it when it stops, and may be the one to free it.
        # (Not a join of every "zibrato-publisher": another client's, e.g. Django's shared
        # one when Django is set up in this process, never stops.)
        while released() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        gc.collect()  # and whatever it left in reference cycles (a socket's context)
    assert released() is None, "a closed client was never released"
    return [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_calls_without_a_broker_raise_nothing_and_stay_fast(dead_address):
    z = Zibrato(publish=dead_address)
    released = weakref.ref(z.publisher)
    try:
        started = time.perf_counter()
        for i in range(CALLS // 4):
            z.incr("nobroker.count")
            z.timing("nobroker.timing", 0.001)
            z.gauge("nobroker.gauge", i)
            with z.timer("nobroker.block"):
                pass
        elapsed = time.perf_counter() - started
        assert elapsed < 5.0, f"{CALLS} calls took {elapsed:.2f} s"  # a test, not a benchmark

        started = time.monotonic()
        z.flush(timeout=0.1)  # nobody to send to: returns, bounded by its timeout
        assert time.monotonic() - started < 1.0
        assert z.stats()["sent_events"] == 0
        started = time.monotonic()
        z.close()
        assert time.monotonic() - started < 1.0
    finally:
        z.close()
        del z
    collect(released)  # leaks are reported by the two tests below


class SlowSink:
    """A capture sink that keeps the publisher's sender busy for a while."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.entered = threading.Event()

    def receive(self, level, source, tags, events) -> None:
        self.entered.set()
        time.sleep(self.seconds)


def test_close_releases_the_socket_even_when_the_sender_is_busy(dead_address):
    """close() may stop waiting for a busy sender, but the socket must still get closed.

    close() gives up waiting when its linger and grace run out while the background thread
    holds the send lock (a slow capture, a large backlog, a GC pause); the socket once
    stayed open for good then, until the garbage collector warned about it. What the thread
    had in hand is counted as lost.
    """
    z = Zibrato(publish=dead_address)
    released = weakref.ref(z.publisher)
    try:
        z.incr("first")
        z.flush(timeout=0.05)  # connects: the client now has a socket
        sink = SlowSink(publisher.CLOSE_GRACE + 0.5)
        publisher.set_capture_sink(sink)
        try:
            z.incr("second")
            assert sink.entered.wait(5), "the background thread never drained"
            started = time.monotonic()
            z.close(linger=0.05)
            # close() itself stays bounded: its linger and grace, and a little more
            assert time.monotonic() - started < 0.05 + publisher.CLOSE_GRACE + 0.3
            # "first" (held: no broker answered) and "second", both in the slow sink's hand
            assert z.stats()["dropped"] == {"close_timeout": 2}
        finally:
            publisher.set_capture_sink(None)
    finally:
        z.close()
        del z
    leaked = collect(released)
    assert leaked == [], [str(w.message) for w in leaked]


def test_a_closed_client_never_reconnects(dead_address):
    """After close(), nothing may open a new connection that nobody will ever close.

    The publisher thread can be waiting for the send lock (here: behind a flush) while
    close() runs; once close() is done it must not drain again: with drops still to
    report, that drain reconnected, leaving a socket and a context open for good.
    """
    leaked = []
    for _ in range(15):  # a race: each round loses it part of the time
        z = Zibrato(publish=dead_address)
        z.incr("pending")
        z.flush(timeout=0.06)  # the publisher thread wakes meanwhile and waits for the lock
        z.close(linger=0.05)
        released = weakref.ref(z.publisher)
        del z
        leaked += collect(released)
    assert leaked == [], sorted({str(w.message).split(" at ")[0] for w in leaked})


def test_events_lost_at_close_without_a_broker_are_counted(dead_address):
    """Events that close() could not deliver are counted, not silently discarded.

    Events still held at close() because no broker has answered yet once vanished: stats()
    showed nothing sent, filtered or dropped, and nothing was logged.
    """
    z = Zibrato(publish=dead_address)
    for _ in range(10):
        z.incr("never.delivered")
    z.close()
    stats = z.stats()
    accounted = stats["sent_events"] + stats["filtered_events"] + sum(stats["dropped"].values())
    assert accounted == 10, stats
    released = weakref.ref(z.publisher)
    del z
    collect(released)  # leaks are test_a_closed_client_never_reconnects's to report


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
