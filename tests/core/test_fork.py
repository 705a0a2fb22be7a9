"""Fork safety: a child gets its own identity and socket, and nothing is sent twice or lost."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from zibrato import Zibrato
from zibrato.publisher import Publisher

PARENT_EVENTS = 5
CHILD_EVENTS = 7

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def wait_child(pid: int, timeout: float) -> int:
    """Reap ``pid`` within ``timeout`` s (killing it if it hangs); return its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not exit within {timeout} s")


def parent_with_pending_events(broker, new_client) -> Zibrato:
    """A connected parent client that holds PARENT_EVENTS recorded but not yet sent."""
    # A long batch interval, so the events are certainly still buffered when we fork.
    z = new_client(publisher=Publisher(broker.frontend, interval=60.0))
    z.incr("parent.connected")
    z.flush()  # the parent has a live socket before the fork, as under gunicorn --preload
    for _ in range(PARENT_EVENTS):
        z.incr("parent.pre_fork")
    assert z.publisher.pending_events == PARENT_EVENTS
    return z


def record_in_child(z: Zibrato) -> None:
    for i in range(CHILD_EVENTS):
        z.incr("child.event", tags={"i": str(i)})
    z.gauge("child.pid", os.getpid())


def check_fork_outcome(collector, z: Zibrato, child_pid: int) -> None:
    z.flush()
    collector.wait_for(
        lambda got: len(collector.named("child.event")) == CHILD_EVENTS,
        "the child's events",
        timeout=5,
    )
    collector.wait_names("parent.pre_fork", "child.pid")
    collector.settle(quiet=0.5)

    parent_id = collector.one("parent.connected").publisher
    assert parent_id == z.publisher.publisher_id
    child_events = collector.named("child.event") + collector.named("child.pid")
    assert {event.publisher for event in child_events} != {parent_id}
    assert len({event.publisher for event in child_events}) == 1
    assert collector.one("child.pid").value == child_pid
    # The parent's pending events arrive exactly once, from the parent only.
    pre_fork = collector.named("parent.pre_fork")
    assert len(pre_fork) == PARENT_EVENTS
    assert {event.publisher for event in pre_fork} == {parent_id}


def test_os_fork_child_publishes_its_own_events_and_not_the_parents(broker, subscribe, new_client):
    collector = subscribe()
    z = parent_with_pending_events(broker, new_client)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            record_in_child(z)
            z.close()
            code = 0
        finally:
            os._exit(code)
    assert wait_child(pid, timeout=10) == 0
    check_fork_outcome(collector, z, pid)


def test_multiprocessing_fork_child_sends_its_events_on_exit(broker, subscribe, new_client):
    """A multiprocessing child just returns: the library's exit hook must send its events."""
    collector = subscribe()
    z = parent_with_pending_events(broker, new_client)
    process = multiprocessing.get_context("fork").Process(target=record_in_child, args=(z,))
    process.start()
    try:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)
            raise AssertionError("the multiprocessing child did not exit within 10 s")
        assert process.exitcode == 0
        check_fork_outcome(collector, z, process.pid)
    finally:
        process.close()


def test_a_forked_childs_stats_start_at_zero(new_client, dead_address):
    z = new_client(publish=dead_address)
    z.incr("parent.bad", level="loud")  # refused (and counted) on the calling thread
    assert z.stats()["dropped"] == {"invalid_level": 1}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what its own client says, then leaves at once
        try:
            stats = z.stats()
            ok = stats["dropped"] == {} and stats["sent_events"] == 0
            os.write(write, b"1" if ok else repr(stats).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert wait_child(pid, 10) == 0
        assert os.read(read, 1000) == b"1"
    finally:
        os.close(read)
    assert z.stats()["dropped"] == {"invalid_level": 1}  # the parent keeps its own


def test_a_fork_while_another_thread_holds_pyzmqs_tracking_lock_does_not_hang(
    broker, subscribe, new_client
):
    """A child once hung for good in close(): the parent's publisher thread was inside
    pyzmq's zero-copy tracking (``zmq.utils.garbage.gc``) when another thread forked, and
    the child inherited that lock held. Nothing of Zibrato's may depend on it."""
    import threading

    from zmq.utils.garbage import gc

    collector = subscribe()
    z = new_client(publish=broker.frontend)
    z.incr("parent.connected")
    z.flush()
    collector.wait_names("parent.connected")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gc._lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(5)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                record_in_child(z)
                z.close()
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join(5)
    assert wait_child(pid, timeout=10) == 0
    collector.wait_for(
        lambda got: len(collector.named("child.event")) == CHILD_EVENTS,
        "the child's events",
        timeout=5,
    )
