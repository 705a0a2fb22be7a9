"""R8: a flood of unique series against a real backend process: memory stays under the
cap, the overflow is counted, and the backend's own health still gets through."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import requests
from reliability_support import Lines, broker_process, report, rss_kb, scaled, stop_process

from zibrato import Zibrato


def _scrape(url: str) -> dict[str, float]:
    """Every sample of the exposition, by its name and labels as written."""
    samples = {}
    for line in requests.get(url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _health(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(f"zibrato_backend_{name}{{"))


def test_r8_a_million_unique_series():
    series = scaled(200_000, 1_000_000)
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
            lines = Lines(backend)
            url = lines.wait_for(r"serving (http://\S+/metrics)", 15)[1]
            client = Zibrato(publish=broker.frontend, buffer_size=series)
            client.incr("r8.hello")
            client.flush(timeout=5)
            deadline = time.monotonic() + 15
            while "zibrato_backend_events_total" not in str(_scrape(url)):
                assert time.monotonic() < deadline, "the backend never reported its health"
                time.sleep(0.2)
            rss_start = rss_kb(backend.pid)
            rss_half = 0
            for i in range(series):
                client.incr(f"r8.series.{i}")
                if i == series // 2:
                    client.flush()
                    rss_half = rss_kb(backend.pid)
            client.close()
            assert client.stats()["dropped"] == {}, client.stats()
            deadline = time.monotonic() + 60
            while True:
                samples = _scrape(url)
                exposed = sum(1 for name in samples if name.startswith("r8_"))
                dropped = _health(samples, "dropped_series_total")
                evicted = _health(samples, "evicted_series_total")
                if dropped + evicted + exposed >= series + 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            rss_end = rss_kb(backend.pid)
        finally:
            stop_process(backend)
    report(
        f"R8 {series} unique series into one prometheus backend: backend RSS {rss_start} kB "
        f"before, {rss_half} kB halfway, {rss_end} kB after; exposed {exposed}, evicted "
        f"{evicted:.0f}, refused by the cap {dropped:.0f}; lost "
        f"{_health(samples, 'lost_events_total'):.0f}"
    )
    assert dropped + evicted + exposed == series + 1, "a series went missing uncounted"
    assert dropped > 0 and exposed <= 10_000  # with r8.hello
    assert _health(samples, "lost_events_total") == 0
    assert _health(samples, "healthy") == 1
    assert re.search(r"zibrato_backend_events_total\{backend=\"prometheus\"\}", str(samples))
    assert rss_end - rss_start < 150_000, "memory grew with the number of series"
    assert rss_end - rss_half < 50_000, "memory kept growing"
