"""R1 and R2: the broker is killed and restarted, or frozen, while an application records.

The application (``app.py``) and the broker are real subprocesses; the receiver stays up
throughout, so every event is either received, counted lost on the way (the jump in
``sent_before`` that the next batch shows), or counted dropped by the application.
"""

from __future__ import annotations

import time

from reliability_support import (
    app_process,
    broker_process,
    receiver,
    report,
    rss_kb,
    scaled,
)

NAME = "reliability.app.events"
HELLO = "reliability.app.hello"
RATE = 5000


def test_r1_broker_killed_and_restarted_while_the_app_records():
    """R1: the app never blocks or raises, delivery resumes within 2 s, every loss counted."""
    restarts = scaled(5, 20)
    with broker_process() as broker, receiver(broker.backend) as rx:
        rx.poll(0.3)  # our subscription reaches the broker before the app connects
        with app_process(broker.frontend, rate=RATE) as app:
            rx.wait_until(lambda r: r.count(NAME) > 0, "first events", 10)
            resumed = []
            for _ in range(restarts):
                steady = rx.count(NAME) + RATE // 4  # a quarter of a second of events
                rx.wait_until(lambda r, n=steady: r.count(NAME) >= n, "a steady flow", 10)
                rx.drain()
                ready_at = broker.restart()
                # Delivery is back when a batch the app sent after the kill arrives: one
                # still on its way from the old broker when it died proves nothing (and
                # the app must not finish before the new path carries its batches, or
                # the last ones could vanish with no later batch to reveal the gap).
                rx.wait_until(
                    lambda r: r.newest_sent > broker.killed_at, "a batch sent after the kill", 10
                )
                resumed.append(time.monotonic() - ready_at)
            final = app.finish()
        rx.settle()
    recorded = final["recorded"] + 1  # and the hello
    stats = final["stats"]
    dropped = sum(stats["dropped"].values())
    received = rx.count(NAME) + rx.count(HELLO)
    lost = rx.lost_on("info")
    worst_call = final["latency"]["start"]["max_ns"]
    report(
        f"R1 {restarts} SIGKILL+restarts at {RATE}/s: recorded {recorded}, received {received}, "
        f"lost on the way {lost} (counted by the subscriber), dropped {dropped} "
        f"{stats['dropped']} (counted by the app); delivery back after "
        f"{min(resumed):.2f}-{max(resumed):.2f} s; calls: median "
        f"{final['latency']['start']['median_ns']:.0f} ns, worst chunk {worst_call:.0f} ns/call"
    )
    assert received + lost + dropped == recorded, "a loss went uncounted (or was counted twice)"
    assert max(resumed) <= 2.0, resumed
    assert worst_call < 20_000_000, "a call was held up for more than a second per 50 calls"


def test_r2_broker_frozen_while_the_app_records():
    """R2: a SIGSTOPped broker neither slows the calls down nor grows the app's memory."""
    freeze = scaled(2.5, 10.0)
    with broker_process() as broker, receiver(broker.backend) as rx:
        rx.poll(0.3)
        with app_process(broker.frontend, rate=RATE) as app:
            rx.wait_until(lambda r: r.count(NAME) > 0, "first events", 10)
            app.command("phase before")
            _receive_for(rx, freeze)
            rss_before = rss_kb(app.pid)
            app.command("phase during")
            broker.freeze()
            try:
                _receive_for(rx, freeze)
                rss_during = rss_kb(app.pid)
            finally:
                broker.thaw()
            app.command("phase after")
            _receive_for(rx, 1.0)
            final = app.finish()
        rx.settle()
    latency = final["latency"]
    before, during = latency["before"], latency["during"]
    ratio = during["median_ns"] / before["median_ns"]
    stats = final["stats"]
    recorded = final["recorded"] + 1
    received = rx.count(NAME) + rx.count(HELLO)
    dropped = sum(stats["dropped"].values())
    lost = rx.lost_on("info")
    report(
        f"R2 broker frozen {freeze:g} s at {RATE}/s: per call median {before['median_ns']:.0f} ns "
        f"before, {during['median_ns']:.0f} ns during (x{ratio:.2f}); p99 {before['p99_ns']:.0f} "
        f"/ {during['p99_ns']:.0f} ns; app RSS {rss_before} kB before, {rss_during} kB frozen; "
        f"recorded {recorded}, received {received}, lost {lost}, "
        f"dropped {dropped} {stats['dropped']}"
    )
    assert ratio < 1.5, "recording got slower while the broker was frozen"
    assert rss_during - rss_before < 50_000, "memory grew with the backlog"
    assert received + lost + dropped == recorded


def _receive_for(rx, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rx.poll(0.05)
