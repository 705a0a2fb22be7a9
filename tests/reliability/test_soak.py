"""R12: a publisher, a broker restarted every few seconds, and a backend, all real
processes, running for a while: their memory and open descriptors stay flat."""

from __future__ import annotations

import subprocess
import sys
import time

from reliability_support import (
    Lines,
    app_process,
    broker_process,
    open_fds,
    report,
    rss_kb,
    scaled,
    stop_process,
)


def _spread(samples: list[int]) -> int:
    return max(samples) - min(samples)


def test_r12_soak_with_a_broker_restart_every_few_seconds():
    duration, restart_every = scaled(12.0, 60.0), scaled(3.0, 10.0)
    with broker_process() as broker:
        backend = subprocess.Popen(
            [
                *(sys.executable, "-m", "zibrato", "backend", "prometheus"),
                *("--connect", broker.backend, "--listen", "127.0.0.1:0", "--flush", "1"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            Lines(backend).wait_for(r"serving http://", 15)
            with app_process(broker.frontend, rate=2000) as app:
                samples: dict[str, list[tuple[int, int]]] = {"app": [], "backend": []}
                brokers: list[tuple[int, int]] = []
                started = time.monotonic()
                next_restart = started + restart_every
                while time.monotonic() - started < duration:
                    time.sleep(0.5)
                    for name, pid in (("app", app.pid), ("backend", backend.pid)):
                        samples[name].append((rss_kb(pid), open_fds(pid)))
                    if time.monotonic() >= next_restart:
                        brokers.append((rss_kb(broker.pid), open_fds(broker.pid)))
                        broker.restart()
                        next_restart += restart_every
                final = app.finish()
            assert backend.poll() is None, "the backend died"
        finally:
            stop_process(backend)
    steady = {name: values[len(values) // 3 :] for name, values in samples.items()}
    rss = {name: _spread([r for r, _ in values]) for name, values in steady.items()}
    fds = {name: _spread([f for _, f in values]) for name, values in steady.items()}
    report(
        f"R12 {duration:g} s, broker restarted every {restart_every:g} s ({broker.restarts}x): "
        f"after warm-up, RSS spread app {rss['app']} kB, backend {rss['backend']} kB, "
        f"brokers {_spread([r for r, _ in brokers])} kB; descriptors spread app {fds['app']}, "
        f"backend {fds['backend']}, brokers {_spread([f for _, f in brokers])}; app recorded "
        f"{final['recorded']}, dropped {final['stats']['dropped']}"
    )
    assert rss["app"] < 10_000 and rss["backend"] < 10_000
    assert fds["app"] <= 4 and fds["backend"] <= 4
    assert _spread([f for _, f in brokers]) <= 4
