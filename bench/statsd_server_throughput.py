"""Anchor: how many metric lines/s the reference statsd server (Etsy statsd, node)
ingests on this machine, and how many it loses, when blasted over UDP loopback.

Usage: python statsd_server_throughput.py STATSD_DIR [N_METRICS] [LINES_PER_PACKET] [RATE]
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

d = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
L = int(sys.argv[3]) if len(sys.argv) > 3 else 20
RATE = float(sys.argv[4]) if len(sys.argv) > 4 else 0  # lines/s offered, 0 = as fast as possible


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


PORT, MGMT_PORT = free_port(), free_port(socket.SOCK_STREAM)
cfg = tempfile.NamedTemporaryFile("w", suffix=".js", delete=False)  # noqa: SIM115
cfg.write(
    json.dumps(
        {
            "port": PORT,
            "mgmt_port": MGMT_PORT,
            "address": "127.0.0.1",
            "mgmt_address": "127.0.0.1",
            "flushInterval": 3600000,
            "backends": [],
            "deleteIdleStats": False,
        }
    )
)
cfg.close()
p = subprocess.Popen(
    ["node", os.path.join(d, "stats.js"), cfg.name],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
time.sleep(1.5)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pkt = (
    "\n".join(["bench.c:1|c"] * (L // 2) + [f"bench.t:{i}|ms" for i in range(L - L // 2)])
).encode()
npk = N // L
t0 = time.perf_counter()
for i in range(npk):
    s.sendto(pkt, ("127.0.0.1", PORT))
    if RATE and i % 50 == 0:
        lag = t0 + (i * L) / RATE - time.perf_counter()
        if lag > 0:
            time.sleep(lag)
send_s = time.perf_counter() - t0
time.sleep(2.0)


def admin(cmd):
    c = socket.create_connection(("127.0.0.1", MGMT_PORT))
    c.sendall(cmd.encode() + b"\n")
    buf = b""
    c.settimeout(2)
    try:
        while not buf.rstrip().endswith(b"END"):
            chunk = c.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        pass
    c.close()
    return buf.decode()


out = admin("counters")
got_c = 0
for line in out.splitlines():
    if "bench.c" in line:
        got_c = float(line.split(":")[1].strip().rstrip(","))
        break
sent_c = npk * (L // 2)
p.terminate()
p.wait()
print(
    f"statsd server: sent {npk * L} lines in {send_s:.2f}s "
    f"({npk * L / send_s:,.0f} lines/s offered), "
    f"counter lines received {got_c:,.0f}/{sent_c:,} ({100 * got_c / sent_c:.1f}%)"
)
