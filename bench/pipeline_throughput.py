"""End-to-end throughput of the Zibrato pipeline on this machine:
publisher process(es) -> `zibrato broker` -> `zibrato backend jsonl` (aggregating).

Each publisher calls z.incr('bench.pipeline') N times as fast as it can (or paced at
RATE events/s), then flushes. The jsonl backend's counter sums tell how many arrived.

Usage: python pipeline_throughput.py [N_PER_PUBLISHER] [PUBLISHERS] [RATE_PER_PUBLISHER] [--curve]
(--curve: the same with CURVE on both sides of the broker, keys from `zibrato keys`.)
Prints: offered events/s, delivered %, and how many lost events were counted (by the
publisher's `zibrato.publisher.dropped` and the backend's `zibrato.backend.lost_events`);
every lost event should be counted.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

CURVE = "--curve" in sys.argv
ARGS = [arg for arg in sys.argv[1:] if arg != "--curve"]
N = int(ARGS[0]) if len(ARGS) > 0 else 1_000_000
P = int(ARGS[1]) if len(ARGS) > 1 else 1
RATE = float(ARGS[2]) if len(ARGS) > 2 else 0.0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


fe, be = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
out = os.path.join(tempfile.mkdtemp(), "rollups.jsonl")
keys = os.path.join(os.path.dirname(out), "keys") if CURVE else None
if keys:
    subprocess.run([sys.executable, "-m", "zibrato", "keys", keys], check=True, capture_output=True)
curve_args = ["--curve", keys] if keys else []
procs = [
    subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zibrato",
            "broker",
            "--frontend",
            fe,
            "--backend-address",
            be,
            *curve_args,
        ]
    ),
    subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zibrato",
            "backend",
            "jsonl",
            "--connect",
            be,
            "--flush",
            "1",
            "--path",
            out,
            *curve_args,
        ]
    ),
]
time.sleep(2.0)
publisher = f"""
import sys, time
from zibrato import Zibrato
z = Zibrato(publish={fe!r}, curve={keys!r})
z.incr('bench.warmup'); z.flush(); time.sleep(1.0)
n, rate = {N}, {RATE}
incr = z.incr
t0 = time.perf_counter()
if rate:
    for i in range(n):
        incr('bench.pipeline')
        if i % 1000 == 0:
            lag = t0 + i / rate - time.perf_counter()
            if lag > 0: time.sleep(lag)
else:
    for i in range(n):
        incr('bench.pipeline')
z.flush()
print(time.perf_counter() - t0, flush=True)
z.close()
print(time.process_time(), flush=True)
"""
t_start = time.perf_counter()
pubs = [
    subprocess.Popen([sys.executable, "-c", publisher], stdout=subprocess.PIPE, text=True)
    for _ in range(P)
]
outputs = [p.communicate()[0].strip().splitlines() for p in pubs]
send_s = max(float(lines[-2]) for lines in outputs)
publisher_cpu = sum(float(lines[-1]) for lines in outputs)
expected = N * P


def totals():
    """Sum the counters of every rollup: what arrived, and what was counted as lost."""
    sums = {"bench.pipeline": 0, "zibrato.publisher.dropped": 0, "zibrato.backend.lost_events": 0}
    try:
        with open(out) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if row.get("name") in sums:
                    sums[row["name"]] += row.get("sum", 0) or 0
    except FileNotFoundError:
        pass
    return sums


def accounted(sums):
    return (
        sums["bench.pipeline"]
        + sums["zibrato.publisher.dropped"]
        + sums["zibrato.backend.lost_events"]
    )


deadline = time.time() + 15
sums = totals()
while accounted(sums) < expected and time.time() < deadline:
    time.sleep(0.5)
    sums = totals()
time.sleep(1.5)  # one more flush, so late loss reports are in


def reap(process):
    """Wait for ``process`` (killed after 5 s); return the CPU seconds it used."""
    deadline = time.time() + 5
    while True:
        pid, _, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = 0  # reaped here, not by Popen
            return usage.ru_utime + usage.ru_stime
        if time.time() > deadline:
            process.kill()
        time.sleep(0.05)


for p in procs:
    p.terminate()
broker_cpu, backend_cpu = (reap(p) for p in procs)
sums = totals()
got = sums["bench.pipeline"]
lost = expected - got
counted = sums["zibrato.publisher.dropped"] + sums["zibrato.backend.lost_events"]
print(
    f"pipeline{' (CURVE)' if CURVE else ''}: {P} publisher(s) "
    f"offered {expected / send_s:,.0f} events/s; "
    f"delivered {got:,.0f}/{expected:,} ({100 * got / expected:.2f}%); "
    f"lost {lost:,.0f}, of which counted {counted:,.0f} "
    f"(dropped in publisher {sums['zibrato.publisher.dropped']:,.0f}, "
    f"lost on the way {sums['zibrato.backend.lost_events']:,.0f}); "
    f"CPU seconds: publisher(s) {publisher_cpu:.2f}, broker {broker_cpu:.2f}, "
    f"backend {backend_cpu:.2f}"
)
