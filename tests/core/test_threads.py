"""Many threads recording at once lose nothing below the high-water mark."""

from __future__ import annotations

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
