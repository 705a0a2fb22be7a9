"""Many threads recording at once lose nothing below the high-water mark."""

from __future__ import annotations

import sys
import threading
import time

THREADS = 16
CALLS = 10_000


def test_sixteen_threads_of_increments_arrive_exactly(broker, subscribe, new_client):
    collector = subscribe()
    z = new_client(publish=broker.frontend, buffer_size=200_000)
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait(10)
            tags = {"worker": str(worker)}
            for _ in range(CALLS):
                z.incr("threads.hits", tags=tags)
        except BaseException as exc:  # surfaced below: a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    # Drain concurrently while the threads record.
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        collector.poll(0.05)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    z.flush()
    expected = THREADS * CALLS
    collector.wait_for(lambda got: collector.total("threads.hits") >= expected, "every increment")
    collector.settle()

    assert collector.total("threads.hits") == expected
    per_worker: dict[str, int] = {}
    for event in collector.named("threads.hits"):
        per_worker[event.tags["worker"]] = per_worker.get(event.tags["worker"], 0) + 1
    assert per_worker == {str(i): CALLS for i in range(THREADS)}
    assert collector.subscriber.losses.lost_events == 0
    assert collector.subscriber.losses.gaps == 0
    assert collector.subscriber.bad_messages == {}
    stats = z.stats()
    assert stats["sent_events"] == expected  # nothing filtered, nothing dropped
    assert stats["dropped"] == {}
    assert stats["filtered_events"] == 0


def test_the_publishers_wake_is_an_event_on_one_lock() -> None:
    """``Wake`` (what the publisher thread sleeps on) behaves as ``threading.Event`` does
    for the four methods the publisher uses, woken from another thread."""
    from zibrato.publisher import Wake

    wake = Wake()
    started = time.monotonic()
    assert wake.wait(0.05) is False and time.monotonic() - started >= 0.04  # times out
    setter = threading.Timer(0.05, wake.set)
    setter.start()
    try:
        assert wake.wait(10.0) is True  # woken, long before its timeout
    finally:
        setter.join()
    assert wake.is_set() and wake.wait(0.0) is True  # stays set until cleared
    wake.set()  # twice: harmless
    wake.clear()
    assert not wake.is_set() and wake.wait(0.01) is False
    wake.clear()  # twice: harmless
    wake.set()
    assert wake.wait(0.0) is True


def test_the_wake_survives_sets_racing_its_wait() -> None:
    """A ``set()`` between ``wait()`` taking the lock and giving it back must not make
    either raise (the publisher thread would die of it)."""
    from zibrato.publisher import Wake

    wake = Wake()
    failures: list[BaseException] = []
    stop = time.monotonic() + 1.0

    def waiter() -> None:
        try:
            while time.monotonic() < stop:
                wake.wait(0.001)
                wake.clear()
        except BaseException as exc:
            failures.append(exc)

    def setter() -> None:
        try:
            while time.monotonic() < stop:
                wake.set()
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=waiter),
        *(threading.Thread(target=setter) for _ in range(3)),
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
